"""When a sweep may claim something: the rules, as pure functions of stored records.

A data-efficiency claim ("strategy X on 20 % of the data is within 10 % of the
reference") is only as good as its reference, scratch training on the whole pool. The
headline makes such claims only when the reference is valid:

1. it was trained on the whole training pool;
2. every seed of it converged: early stopping fired while the learning rate was still at
   least a fifth of its peak (a plateau, not the flat tail of a decaying learning rate:
   ``Convergence.plateau``), or a run with twice its budget (spec role ``budget-check``)
   changed its best validation force RMSE by less than ``BUDGET_CHECK_TOLERANCE``;
3. it beats the foundation with only its reference energies refit on the same data
   (zero-shot-e0) on both test energy and force RMSE: a "reference" worse than no
   training at all measures the budget, not the data.

A claimed point must satisfy the claim with its seed spread: mean + std over seeds. When a
rule fails, the row says which and why, and no claim, ratio or time to target is shown.

Example:
    >>> verdict = reference_verdict(ref_point, zero_e0_point, checks)
    >>> verdict.valid, verdict.text
    (False, 'not converged: validation F still falling 4.2 %/epoch at epoch 3 (stopped: budget)')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.core.contract import Record, TrainSpec

if TYPE_CHECKING:
    from bench.headline import Point

BUDGET_CHECK_TOLERANCE = 0.05
FORCES, ENERGY = "forces_rmse_mev_per_ang", "energy_rmse_mev_per_atom"
RULES = (
    "Claims are made only against a valid reference: scratch on the whole training pool, every seed "
    "converged (early stopping while the learning rate was still at least 20 % of its peak, or a run with "
    f"twice the budget changed its best validation force RMSE by less than {100 * BUDGET_CHECK_TOLERANCE:g} %), "
    "and better than zero-shot-e0 (the foundation with only its reference energies refit on the same data) "
    "on test energy and force RMSE. A point is within tolerance when its mean + std over seeds is. "
    "Otherwise the row says why no claim is made."
)


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reasons: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "valid"


def budget_checks(records: list[Record]) -> dict[str, list[Record]]:
    """spec id -> the ok runs with twice its budget (role ``budget-check``)."""
    out: dict[str, list[Record]] = {}
    for r in records:
        if r.ok and isinstance(r.spec, TrainSpec) and r.spec.role == "budget-check" and r.spec.check_of:
            out.setdefault(r.spec.check_of, []).append(r)
    return out


def best_val_forces(record: Record) -> float | None:
    c = record.convergence
    if c is not None and c.val_forces_best_mev_per_ang is not None:
        return c.val_forces_best_mev_per_ang
    values = [r.val_forces_rmse_mev_per_ang for r in record.curve or () if r.val_forces_rmse_mev_per_ang]
    return min(values) if values else None


def converged(record: Record, checks: dict[str, list[Record]]) -> tuple[bool, str]:
    """Whether a training run converged by the rules above, and in words why (not)."""
    c = record.convergence
    if c is not None and c.plateau:
        return True, (f"plateau: early stopping at epoch {c.epochs_run} with the learning rate at "
                      f"{100 * (c.lr_fraction_at_stop or 0):.0f} % of its peak")
    base = best_val_forces(record)
    for check in checks.get(record.spec_id, []):
        longer = best_val_forces(check)
        if base and longer is not None:
            change = (longer - base) / base
            if abs(change) < BUDGET_CHECK_TOLERANCE:
                return True, f"twice the budget changed the best validation F by {100 * change:+.1f} %"
            return False, (f"not converged: twice the budget changed the best validation F by "
                           f"{100 * change:+.1f} %")
    if c is None:
        return False, "not converged: the run recorded no convergence information"
    trend = c.val_forces_trend_pct_per_epoch
    if trend is not None and trend < 0:
        return False, (f"not converged: validation F still falling {-trend:.1f} %/epoch at epoch {c.epochs_run} "
                       f"(stopped: {c.stopped})")
    return False, (f"not converged: stopped ({c.stopped}) with the learning rate at "
                   f"{100 * (c.lr_fraction_at_stop or 0):.0f} % of its peak and no run with twice the budget")


def reference_verdict(reference: Point, zero_e0: Point | None, checks: dict[str, list[Record]]) -> Verdict:
    """Whether the scratch reference supports claims, by the rules above."""
    reasons = []
    fraction = reference.fraction or 0
    if fraction < 0.999:
        reasons.append(f"reference trained on {reference.size} structures, {100 * fraction:.0f} % of the pool")
    for record in sorted(reference.records, key=lambda r: r.spec.seed):
        ok, why = converged(record, checks)
        if not ok:
            reasons.append(f"reference {why}" + (f" (seed {record.spec.seed})" if len(reference.records) > 1 else ""))
            break
    if zero_e0 is None:
        reasons.append("no zero-shot-e0 at the reference's size to check it against")
    else:
        ref_f, ref_e = reference.mean(FORCES), reference.mean(ENERGY)
        z_f, z_e = zero_e0.mean(FORCES), zero_e0.mean(ENERGY)
        if ref_f >= z_f or ref_e >= z_e:
            reasons.append(f"reference no better than zero-shot-e0 (F {ref_f:,.0f} vs {z_f:,.0f} meV/Å, "
                           f"E {ref_e:,.1f} vs {z_e:,.1f} meV/atom)")
    return Verdict(not reasons, tuple(reasons))


def upper(point: Point, metric: str) -> float | None:
    """Mean + std over seeds: what a claim about the point must hold for."""
    s = point.stat(metric)
    return None if s is None else s.mean + s.std
