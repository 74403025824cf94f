"""A balancing plan: every class (space group) brought to the same count.

:func:`plan_balance` decides, for each class, which existing members are used
as they are and how many augmented variants of which members are made:

* a class with at least ``target`` members is **down-sampled** to ``target``
  (a seeded permutation of its members);
* a smaller class keeps all its members and is filled with augmented variants,
  assigned round-robin over its members in a seeded order, so each member is
  augmented at most ceil((target - n) / n) times;
* a class with no members cannot be augmented and is listed in ``empty``
  (fill it with synthetic crystals, or leave it out);
* with ``max_variants`` no member gets more than that many augmented copies;
  a class that cannot reach ``target`` then stops at n (1 + max_variants) and
  is listed in ``short`` (class -> count reached).

Every planned item carries a global ``item`` index; the augmentation of an
item is drawn from ``(seed, item)`` (:func:`xtalhpc.curate.augment.item_rng`),
so the plan is reproducible and can be executed in any order or on any number
of ranks. Balance the training split only: augmented variants inherit their
parent's structure-type key, and so its split.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError

#: The poster's balanced set: 50k patterns.
POSTER_BALANCED_TOTAL = 50_000


@dataclass(frozen=True)
class PlanItem:
    """One pattern of the balanced set: ``member`` (index into the input), ``variant`` 0 = as is."""

    item: int
    label: int
    member: int
    variant: int


@dataclass
class BalancePlan:
    target: int
    seed: int
    items: list[PlanItem]
    empty: list[int] = field(default_factory=list)
    short: dict[int, int] = field(default_factory=dict)

    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def write_csv(self, path: str | Path, ids: Sequence[str] | None = None) -> None:
        """Columns: item, label, member, id (member's id when given), variant."""
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["item", "space_group", "member", "id", "variant", "seed"])
            for it in self.items:
                w.writerow([it.item, it.label, it.member, "" if ids is None else ids[it.member],
                            it.variant, self.seed])


def target_per_class(total: int, n_classes: int) -> int:
    """Per-class count of a balanced set of ``total`` patterns over ``n_classes`` classes."""
    if n_classes <= 0 or total <= 0:
        raise InputError(f"total {total} and classes {n_classes} must be > 0", field="total")
    return max(1, total // n_classes)


def plan_balance(labels: Iterable[int], target: int, seed: int = 0,
                 classes: Iterable[int] | None = None, max_variants: int | None = None) -> BalancePlan:
    """Plan a balanced set with ``target`` items per class.

    Parameters
    ----------
    labels : class (space-group number) of each input structure.
    target : items per class, > 0.
    seed : integer seed for down-sampling and member order.
    classes : the classes to balance (default: those present in ``labels``);
        classes given here but absent from ``labels`` end up in ``plan.empty``.
    max_variants : most augmented copies per member (None: no limit).
    """
    labels = [int(x) for x in labels]
    if int(target) <= 0:
        raise InputError(f"target {target} must be > 0", field="target")
    target = int(target)
    if max_variants is not None and int(max_variants) < 0:
        raise InputError(f"max_variants {max_variants} must be >= 0", field="max_variants")
    members: dict[int, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        members[lab].append(i)
    wanted = sorted(set(members) if classes is None else {int(c) for c in classes})
    items: list[PlanItem] = []
    empty = []
    short: dict[int, int] = {}
    for lab in wanted:
        mem = members.get(lab, [])
        if not mem:
            empty.append(lab)
            continue
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), lab]))
        order = [mem[j] for j in rng.permutation(len(mem))]
        if len(order) >= target:
            chosen = [(m, 0) for m in sorted(order[:target])]
        else:
            chosen = [(m, 0) for m in mem]
            need = target - len(mem)
            if max_variants is not None and need > len(mem) * int(max_variants):
                need = len(mem) * int(max_variants)
                short[lab] = len(mem) + need
            for k in range(need):
                chosen.append((order[k % len(order)], 1 + k // len(order)))
        for m, v in chosen:
            items.append(PlanItem(item=len(items), label=lab, member=m, variant=v))
    return BalancePlan(target=target, seed=int(seed), items=items, empty=empty, short=short)


def execute_plan(plan: BalancePlan, crystals: Sequence, config=None, *, on_error: str = "skip"):
    """Yield ``(item, crystal, record)`` for every plan item.

    Variant 0 yields the member itself (record ``{"ops": []}``); variants > 0
    an augmented copy from :class:`xtalhpc.curate.augment.StructureAugmenter`
    drawn with ``(plan.seed, item.item)``. With ``on_error="skip"`` an item whose
    augmentation fails (space group not kept in ``max_tries`` draws) yields
    ``crystal=None`` and the error in the record; ``"raise"`` re-raises.
    """
    from .augment import AugmentationError, StructureAugmenter

    augmenters: dict[int, StructureAugmenter] = {}
    current_label = None
    for it in plan.items:
        if it.label != current_label:  # items come class by class: keep one class's analyses only
            augmenters.clear()
            current_label = it.label
        c = crystals[it.member]
        if it.variant == 0:
            yield it, c, {"seed": plan.seed, "index": it.item, "ops": []}
            continue
        try:
            if it.member not in augmenters:
                augmenters[it.member] = StructureAugmenter(c, config)
            new, rec = augmenters[it.member].sample(plan.seed, it.item)
        except AugmentationError as exc:
            if on_error == "raise":
                raise
            yield it, None, {"seed": plan.seed, "index": it.item, "error": str(exc)}
            continue
        yield it, new, rec
