"""The `lsq` refiner: SHELXL-style full-matrix / blocked least squares on F².

Modules, one concept each:

- `model`: the working model (numpy arrays) and its conversion from/to `Structure`;
- `parameters`: free parameters ↔ model, with special-position, riding-H and
  occupancy constraints;
- `least_squares`: Fc², the Jacobian from the engine's analytic derivatives, the normal
  equations and Levenberg-Marquardt cycles (full or blocked matrix);
- `weighting`: SHELXL weights and their a, b optimisation;
- `hydrogens`: geometric (riding) H placement;
- `maps`: difference density and peak search (on the kernel's `fourier` module);
- `completion`: difference-Fourier model completion and element assignment;
- `refiner`: the `LsqRefiner` component that runs the stages.
"""
