"""Configuration models of the built-in classifiers (light: pydantic and refractor_core only)."""

from __future__ import annotations

from pydantic import Field

from refractor_core.interfaces import ComponentConfig


class AbsencesConfig(ComponentConfig):
    """Options of the classical `absences` classifier.

    Evidence weights: P(G) = P(L) · P(G | L) with

        P(L)     ∝ exp(w_laue · LL_Laue(L) + w_merged · n_merged(L)) · Σ_{G in L} prior(G)
        P(G | L) ∝ exp(w_absences · LLR_absences(G) + w_centro · (±½ LLR_centro)
                       + w_bijvoet · (±½ LLR_bijvoet) + w_zones · Σ_f ±½ v_f) · prior(G)
        log prior(G) = w_prior · log P(type) + log P(setting | type)

    (`analysis.hypothesis_probabilities`). w_merged, w_absences, w_centro, w_bijvoet, w_zones
    and the robust share are fitted by
    maximum likelihood on the calibration split of the simulated benchmark, whose
    space-group types are drawn uniformly, with the type prior switched off
    (`python benchmarks/spacegroup.py calibrate`): they make the evidence calibrated
    likelihood ratios (the temperature is folded into them). The type prior
    (space-group frequencies, `priors.py`) then enters with weight w_prior = 1, as Bayes'
    rule has it for data drawn from the published population. w_laue is held at the upper
    end of the range over which that likelihood is flat (`benchmarks/spacegroup.py`, W_LAUE),
    so that the type prior cannot overturn clear Laue evidence.

    metric_tolerance: |ΔG_ij|/sqrt(G_ii G_jj) allowed when deciding which rotations the cell
    metric admits; absent_leak: mean true intensity of a systematically absent reflection as a
    fraction of the local mean intensity (multiple diffraction, λ/2, neighbour tails);
    absent_outlier_fraction: share of absent reflections allowed to be arbitrary outliers;
    weak_class_share: prior share of reflection classes present but systematically weak
    (special positions, pseudo-symmetry; `absence_scoring`), so they are not taken for absent;
    removed_absences_prior: prior probability that the data processing removed the absent
    reflections from the file (then their *absence from the file* is the evidence);
    op_systematic_width: allowance for systematic error in the per-operator agreement
    (1 = equal within the data's errors, 0 = unrelated); centro_slope: ⟨|E²-1|⟩ difference
    per unit of centrosymmetry evidence; centro_spread, centro_random_share: how far from
    the random-atom values ⟨|E²-1|⟩ may lie before it stops counting (`centrosymmetry.py`);
    ambiguity_ratio: the top hypothesis is "ambiguous"
    when the runner-up has at least this fraction of its probability; max_hypotheses and
    min_probability trim the list returned.
    """

    metric_tolerance: float = Field(default=0.02, gt=0.0, le=0.2)
    w_laue: float = Field(default=5.0, ge=0.0)
    w_absences: float = Field(default=2.325, ge=0.0)
    w_centro: float = Field(default=6.723, ge=0.0)
    w_prior: float = Field(default=1.0, ge=0.0)
    w_merged: float = Field(default=10.0, ge=0.0, description="evidence per rotation the file was merged with")
    w_bijvoet: float = Field(default=1.720, ge=0.0, description="weight of the Bijvoet-difference centrosymmetry evidence")
    w_zones: float = Field(default=2.665, ge=0.0, description="weight of the zone-wise centricity evidence (`zones.py`)")
    zones_always: bool = Field(default=False, description="compute the zone terms even when w_zones is 0 (for calibration)")
    bijvoet_twin_share: float = Field(default=0.15, gt=0.0, lt=1.0, description="share of acentric crystals without Bijvoet differences (inversion twins)")
    bijvoet_cap: float = Field(default=30.0, gt=0.0, description="largest Bijvoet evidence against a centre (nats, before weighting)")
    robust: float = Field(default=0.0483, ge=0.0, lt=1.0, description="share of misleading evidence (see hypothesis_probabilities)")
    robust_temper: float = Field(default=0.05, ge=0.0, le=1.0)
    absent_leak: float = Field(default=0.02, gt=0.0, lt=0.5)
    absent_outlier_fraction: float = Field(default=0.01, ge=0.0, lt=0.5)
    weak_class_share: float = Field(default=0.1, ge=0.0, lt=1.0, description="prior share of reflection classes that are present but systematically weak (special positions, pseudo-symmetry)")
    removed_absences_prior: float = Field(default=0.4, gt=0.0, lt=1.0)
    op_systematic_width: float = Field(default=0.04, gt=0.0, le=0.5)
    op_outlier_fraction: float = Field(default=0.01, ge=0.0, lt=1.0)
    op_unscaled_width: float = Field(default=0.15, gt=0.0, le=0.5, description="op_systematic_width when the error scale cannot be measured")
    centro_slope: float = Field(default=0.116, gt=0.0)
    centro_cap: float = Field(default=4.0, gt=0.0)
    centro_spread: float = Field(default=0.05, gt=0.0, le=0.5, description="spread of <|E²-1|> between random-atom structures of one kind")
    centro_random_share: float = Field(default=0.9, gt=0.0, le=1.0, description="share of structures whose E statistics follow random-atom theory (1: all)")
    laue_window: float = Field(default=60.0, gt=0.0, description="nats below the best Laue group still analysed")
    ambiguity_ratio: float = Field(default=0.25, gt=0.0, le=1.0)
    max_hypotheses: int = Field(default=20, ge=1)
    min_probability: float = Field(default=1e-4, ge=0.0, lt=1.0)
    use_priors: bool = True
