"""Writers of structure files.

- `cif_writer.structure_cif`: CIF (core dictionary) with s.u.s, refinement figures and the
  embedded `_shelx_res_file` / `_shelx_hkl_file`;
- `res_writer.structure_res`: SHELX .res (LATT/SYMM, sof coding, AFIX riding groups);
- `fcf_writer.structure_fcf`: SHELXL-style .fcf LIST 4;
- `hkl_writer.format_hklf4`: HKLF 4 text;
- `outputs.write_structure_outputs`: `<stem>.cif/.res/.fcf` of a refined candidate, atomically.

The readers live in the `refractor_plugins.readers` plugin; `refractor_core.dataio` loads files.
"""
