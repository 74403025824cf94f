"""Curation of training structures: de-duplication, leakage-free splits,
balancing and augmentation, H/D, and the class-balance report.

See docs/curation.md for the rules (tolerances, keys, keep rule) and units.
"""
from __future__ import annotations

from .augment import (AugmentationError, StructureAugmentConfig, StructureAugmenter, augment_structure,
                      detect_space_group, item_rng, substitution_partners)
from .balance import BalancePlan, PlanItem, execute_plan, plan_balance, target_per_class
from .dedup import DEFAULT_ANGLE_TOL, DEFAULT_LENGTH_TOL, DedupResult, cells_match, find_duplicates
from .formula import anonymous_formula, canonical_formula, parse_formula
from .hd import deuterate, incoherent_background, incoherent_background_level, incoherent_cross_section
from .pattern_aug import (PatternAugmentConfig, apply_pattern_augmentation, chebyshev_background,
                          lorentzian_broaden, march_dollase, poisson_noise, sample_pattern_augmentation,
                          scherrer_fwhm, scherrer_lx, zero_shift)
from .report import class_balance_report
from .splits import assign_splits, structure_type_key
from .table import Record, read_records, read_table

__all__ = [
    "AugmentationError", "BalancePlan", "DEFAULT_ANGLE_TOL", "DEFAULT_LENGTH_TOL", "DedupResult",
    "PatternAugmentConfig", "PlanItem", "Record", "StructureAugmentConfig", "StructureAugmenter",
    "anonymous_formula", "apply_pattern_augmentation", "assign_splits", "augment_structure",
    "canonical_formula", "cells_match", "chebyshev_background", "class_balance_report", "detect_space_group",
    "deuterate", "execute_plan", "find_duplicates", "incoherent_background", "incoherent_background_level",
    "incoherent_cross_section", "item_rng", "lorentzian_broaden", "march_dollase", "parse_formula",
    "plan_balance", "poisson_noise", "read_records", "read_table", "sample_pattern_augmentation",
    "scherrer_fwhm", "scherrer_lx", "structure_type_key", "substitution_partners", "target_per_class",
    "zero_shift",
]
