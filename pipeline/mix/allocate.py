"""The allocation of a token budget over groups of documents: pure functions on arrays, no files, no config.

`resolve_shares` turns a weights file's group -> weight (or none) into each group's share of the budget;
`allocate` decides how many copies of each document go into the mix; `mix_order` is the seeded order of the
copies. The stage (`pipeline.mix.stage`) reads the corpus, calls these, and writes the result.

The rules (docs/mix.md):

- A group's documents come ranked best first (by `quality_prob`, the caller's order). A group that has more
  tokens than its share is cut best first: the longest prefix of its ranking that fits, then smaller
  lower-ranked documents only to fill the last gap (less than one document's worth of tokens).
- A group with fewer tokens than its share is repeated: whole epochs of every document, then a partial epoch
  chosen like a cut. At most `max_epochs` epochs (the repeat cap); the share it still lacks then (its
  shortfall) is given to the other groups in proportion to their shares, again under the cap (water-filling).
- Budgets are in training tokens: a document's tokens plus its one end-of-document token, the caller's
  `tokens` arrays. The total hits the budget to within a document's worth of tokens, far inside 1% unless
  the documents are large next to the budget; when every group is at the cap the mix is short and says by
  how much.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import CurateError

TOLERANCE = 0.01  # the promise: the total within 1% of the budget, or the reason it cannot be


class MixError(CurateError):
    """A weights file or a mix setting that cannot be used: the message says what and how to fix it."""


# ------------------------------------------------------------------------------------------------ weights


def check_weights(weights: Mapping[Any, Any], groups: list[str], where: str = "mix.weights") -> dict[str, float]:
    """The weights as {group: float}: every name an existing group, every value a number >= 0 (else MixError,
    listing the groups)."""
    checked: dict[str, float] = {}
    unknown = []
    for name, value in weights.items():
        name = str(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise MixError(f"{where}: the weight of {name!r} is {value!r}, not a number")
        if value < 0:
            raise MixError(f"{where}: the weight of {name!r} is {value}: a weight is 0 or more")
        if name not in groups:
            unknown.append(name)
        checked[name] = float(value)
    if unknown:
        raise MixError(f"{where} names {len(unknown)} group(s) the corpus does not have: {', '.join(sorted(unknown))}. "
                       f"Its groups are: {', '.join(groups) or '(none)'}")
    return checked


def resolve_shares(available: Mapping[str, int], weights: Mapping[str, float] | None = None,
                   default_weight: float | None = None) -> dict[str, float]:
    """Each group's share of the budget (summing to 1 over the groups with tokens).

    No weights: every group's natural share (its tokens over all tokens). With weights: a named group gets its
    weight; the groups the weights do not name get `default_weight`, or, when that is None, share what the
    named weights leave (1 - their sum) in their natural proportions. When every group has a weight that way
    (all named, or a default weight), the weights are relative and normalized to sum 1."""
    total = sum(available.values())
    if total <= 0:
        raise MixError("the corpus has no tokens to mix")
    if weights is None:
        return {name: tokens / total for name, tokens in available.items()}
    named = {name: w for name, w in weights.items() if name in available}
    unnamed = [name for name in available if name not in named]
    if unnamed and default_weight is None:
        named_sum = sum(named.values())
        if named_sum > 1 + 1e-9:
            raise MixError(f"mix.weights: the weights sum to {named_sum:g}, above 1, and leave nothing for the "
                           f"groups they do not name ({', '.join(sorted(unnamed))}): give those a weight too "
                           "(weights are then relative), or set mix.default_weight")
        rest = sum(available[name] for name in unnamed)
        shares = {name: named.get(name, 0.0) for name in available}
        for name in unnamed:
            shares[name] = max(0.0, 1 - named_sum) * available[name] / rest if rest else 0.0
        if sum(shares.values()) <= 0:
            raise MixError("mix.weights: every group has weight 0: nothing to mix")
        return shares
    raw = {name: named.get(name, default_weight or 0.0) for name in available}
    raw_sum = sum(raw.values())
    if raw_sum <= 0:
        raise MixError("mix.weights: every group has weight 0 (mix.default_weight 0 leaves out the groups the "
                       "file does not name): nothing to mix")
    return {name: value / raw_sum for name, value in raw.items()}


# ------------------------------------------------------------------------------------------------ allocation


@dataclass
class GroupPlan:
    """What the allocation did with one group (tokens are training tokens)."""

    name: str
    docs: int  # documents in the group
    available: int  # tokens of one copy of each
    share: float  # the share its weight gives it
    wanted: int  # share x budget
    quota: int  # after the repeat cap and the redistribution of shortfalls
    taken: int = 0  # tokens in the mix, copies included
    rows: int = 0  # copies in the mix
    docs_taken: int = 0  # distinct documents in the mix
    epochs: float = 0.0  # taken / available
    capped: bool = False  # held at the repeat cap
    shortfall: int = 0  # wanted - quota, for a capped group: given to the others
    received: int = 0  # quota - wanted, for the others: what they got of the shortfalls

    @property
    def action(self) -> str:
        """cut | whole | repeated | left out (weight 0)."""
        if self.share <= 0 or self.quota <= 0:
            return "left out"
        if self.taken < self.available:
            return "cut"
        if self.taken == self.available:
            return "whole"
        return "repeated"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "epochs": round(self.epochs, 4), "share": round(self.share, 6),
                "action": self.action}


@dataclass
class Allocation:
    """Copies per document (`counts[group]`, in the group's ranked order) and what happened per group."""

    target: int
    max_epochs: float
    groups: dict[str, GroupPlan]
    counts: dict[str, np.ndarray] = field(repr=False)

    @property
    def total(self) -> int:
        return sum(plan.taken for plan in self.groups.values())

    @property
    def capacity(self) -> int:
        """The most the groups with a share could give: every one at the repeat cap."""
        return sum(_cap(plan.available, self.max_epochs) for plan in self.groups.values() if plan.share > 0)

    @property
    def within_tolerance(self) -> bool:
        return abs(self.total - self.target) <= TOLERANCE * self.target

    def shortfall_note(self) -> str | None:
        """Why the total misses the budget by more than 1%, or None when it does not."""
        if self.within_tolerance:
            return None
        if self.capacity < self.target * (1 - TOLERANCE):
            return (f"not enough tokens even at the repeat cap: every group with a share is at {self.max_epochs:g} "
                    f"epochs, {self.capacity:,} tokens in all, {self.target - self.total:,} short of the budget "
                    "(raise mix.max_epochs, lower the budget, or mix a larger corpus)")
        return (f"the documents are too large for the budget to be hit closer: {self.total:,} of {self.target:,} "
                "tokens, and no document left fits in the gap")


def _cap(available: int, max_epochs: float) -> int:
    return int(math.floor(max_epochs * available + 1e-9))


def _quotas(available: Mapping[str, int], shares: Mapping[str, float], target: int,
            max_epochs: float) -> tuple[dict[str, int], set[str]]:
    """Integer token quotas by water-filling: every group its share of the budget, none above its cap; what a
    capped group cannot take goes to the uncapped ones in proportion to their shares, until none is left or
    every group is capped. Returns (quotas, capped groups)."""
    active = sorted(name for name in available if shares.get(name, 0) > 0 and available[name] > 0)
    quotas: dict[str, float] = {name: 0 for name in available}
    capped: set[str] = set()
    left = float(target)
    while active:
        weight = sum(shares[name] for name in active)
        desired = {name: left * shares[name] / weight for name in active}
        over = [name for name in active if desired[name] >= _cap(available[name], max_epochs)]
        if not over:
            quotas.update(desired)
            break
        for name in over:
            quotas[name] = _cap(available[name], max_epochs)
            left -= quotas[name]
            capped.add(name)
        active = [name for name in active if name not in capped]
    # integers summing to the real total: floors, then one more token for the largest remainders
    floors = {name: int(math.floor(value)) for name, value in quotas.items()}
    units = int(round(sum(quotas.values()))) - sum(floors.values())
    by_remainder = sorted((name for name in quotas if name not in capped),
                          key=lambda name: (-(quotas[name] - floors[name]), name))
    for name in by_remainder[:max(units, 0)]:
        floors[name] += 1
    return floors, capped


def first_fit(tokens: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
    """The documents taken for `budget` tokens, best first: the longest prefix of the ranking that fits, then
    later (lower-ranked) documents that still fit, in rank order. Returns (mask, tokens used)."""
    mask = np.zeros(len(tokens), dtype=bool)
    if budget <= 0 or not len(tokens):
        return mask, 0
    cumulative = np.cumsum(tokens, dtype=np.int64)
    prefix = int(np.searchsorted(cumulative, budget, side="right"))
    mask[:prefix] = True
    left = budget - (int(cumulative[prefix - 1]) if prefix else 0)
    if prefix < len(tokens) and left > 0:
        rest = tokens[prefix:]
        smallest_after = np.minimum.accumulate(rest[::-1])[::-1]
        for i in range(len(rest)):
            if left < smallest_after[i]:
                break  # nothing from here on fits
            if rest[i] <= left:
                mask[prefix + i] = True
                left -= int(rest[i])
    return mask, budget - left


def _take(tokens: np.ndarray, quota: int, max_epochs: float) -> np.ndarray:
    """Copies per document for `quota` tokens: whole epochs, then a partial one chosen by `first_fit`."""
    counts = np.zeros(len(tokens), dtype=np.int32)
    total = int(tokens.sum())
    if quota <= 0 or total <= 0:
        return counts
    full = min(quota // total, int(math.floor(max_epochs)))
    counts[:] = full
    left = quota - full * total
    if left > 0 and full < math.ceil(max_epochs):
        mask, _ = first_fit(tokens, left)
        counts[mask] += 1
    return counts


def allocate(groups: Mapping[str, np.ndarray], shares: Mapping[str, float], target: int,
             max_epochs: float = 4.0) -> Allocation:
    """How many copies of each document go into a mix of `target` tokens.

    `groups`: group -> training tokens of its documents, ranked best first; `shares`: group -> share of the
    budget (`resolve_shares`). Deterministic: the same inputs give the same counts."""
    if target < 1:
        raise MixError("the budget must be at least 1 token")
    if max_epochs < 1:
        raise MixError(f"max_epochs must be at least 1, got {max_epochs}")
    tokens = {name: np.asarray(groups[name], dtype=np.int64) for name in sorted(groups)}
    available = {name: int(array.sum()) for name, array in tokens.items()}
    share_sum = sum(shares.get(name, 0.0) for name in tokens if available[name] > 0) or 1.0
    norm = {name: (shares.get(name, 0.0) / share_sum if available[name] > 0 else 0.0) for name in tokens}
    quotas, capped = _quotas(available, norm, target, max_epochs)
    plans = {name: GroupPlan(name=name, docs=len(tokens[name]), available=available[name], share=norm[name],
                             wanted=int(round(norm[name] * target)), quota=quotas[name], capped=name in capped)
             for name in tokens}
    for plan in plans.values():
        if plan.capped:
            plan.shortfall = max(0, plan.wanted - plan.quota)
        else:
            plan.received = max(0, plan.quota - plan.wanted)
    counts: dict[str, np.ndarray] = {}
    # Capped groups first (their quota is whole epochs, or nearly), then the others from the smallest quota up:
    # the tokens a group's last gap leaves over are carried to the next group, so the largest one, last, has
    # the most documents to fill the final gap with.
    order = sorted(tokens, key=lambda name: (name not in capped, quotas[name], name))
    carry = 0
    for name in order:
        cap = _cap(available[name], max_epochs)
        quota = quotas[name] + (carry if quotas[name] > 0 else 0)
        quota = min(quota, cap)
        counts[name] = _take(tokens[name], quota, max_epochs)
        taken = int((counts[name] * tokens[name]).sum())
        if quotas[name] > 0:
            carry = quota - taken
    # what is still left over: any group's documents not yet in its current epoch that fit, under its cap
    if carry > 0:
        for name in order:
            if carry <= 0 or quotas[name] <= 0:
                continue
            array, copies = tokens[name], counts[name]
            room = _cap(available[name], max_epochs) - int((copies * array).sum())
            epoch = int(copies.min()) if len(copies) else 0
            if epoch >= math.ceil(max_epochs) or room <= 0:
                continue
            eligible = np.flatnonzero(copies == epoch)
            mask, used = first_fit(array[eligible], min(carry, room))
            copies[eligible[mask]] += 1
            carry -= used
    for name, plan in plans.items():
        copies = counts[name]
        plan.taken = int((copies * tokens[name]).sum())
        plan.rows = int(copies.sum())
        plan.docs_taken = int((copies > 0).sum())
        plan.epochs = plan.taken / plan.available if plan.available else 0.0
    return Allocation(target=target, max_epochs=max_epochs, groups=plans, counts=counts)


def describe_group(group: dict[str, Any], max_epochs: float) -> str:
    """What happened to a group, in words (the card, the summary, explain)."""
    action = group["action"]
    if action == "left out":
        return "left out (weight 0)"
    cut, fillers = group.get("cut_quality"), group.get("gap_fillers") or 0
    at = "" if cut is None else f" (down to quality_prob {cut}" + (
        f", and {fillers} smaller lower-ranked document(s) to fill the last gap)" if fillers else ")")
    if action == "cut":
        text = f"cut best first to {group['taken'] / group['available']:.0%}{at}"
    elif action == "whole":
        text = "taken whole"
    else:
        text = f"repeated {group['epochs']:.2f} epochs" + (f", the last one best first{at}" if cut is not None else "")
    if group["capped"] and group["shortfall"]:
        text += f"; at the repeat cap ({max_epochs:g} epochs): {group['shortfall']:,} tokens short, given to the others"
    elif group["received"]:
        text += f"; +{group['received']:,} tokens of the others' shortfall"
    return text


# ------------------------------------------------------------------------------------------------ order


def mix_order(copies: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded order of every copy: (document index, repeat index) per row of the mix, in mix order.

    `copies[i]`: copies of document i. Copy r of a document with c copies is placed at a random point of the
    r-th c-th of the stream, so every group is spread evenly over the whole stream and no document's copies
    meet (each epoch of a repeated group falls in its own part of the stream)."""
    copies = np.asarray(copies, dtype=np.int64)
    doc = np.repeat(np.arange(len(copies), dtype=np.int64), copies)
    starts = np.cumsum(copies) - copies
    repeat = np.arange(len(doc), dtype=np.int64) - np.repeat(starts, copies)
    rng = np.random.default_rng(seed)
    key = (repeat + rng.random(len(doc))) / np.repeat(copies, copies).clip(min=1)
    order = np.lexsort((np.arange(len(doc)), key))
    return doc[order], repeat[order]
