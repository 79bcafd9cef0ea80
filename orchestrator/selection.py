"""Choosing the tenants a command acts on: a pure function of the registry and the selectors."""

from __future__ import annotations

from collections.abc import Sequence

from .exceptions import EmptySelection, UnknownTenant, UserError
from .models import Selector, Tenant


def select(tenants: Sequence[Tenant], selector: Selector) -> list[Tenant]:
    """Tenants matching every selector, in id order.

    Explicit ``--tenant`` ids must exist and be enabled (naming a disabled tenant is a mistake, not a
    silent skip); ``--tag`` values must all be present; ``--exclude`` ids must exist.
    """
    by_id = {t.id: t for t in tenants}
    for wanted in (*selector.tenants, *selector.exclude):
        if wanted not in by_id:
            raise UnknownTenant(wanted)
    if selector.tenants:
        disabled = [t for t in selector.tenants if not by_id[t].enabled]
        if disabled:
            raise UserError(f"tenant {disabled[0]!r} is disabled (enable it with `tenants enable`)")
        pool = [by_id[t] for t in dict.fromkeys(selector.tenants)]
    else:
        pool = [t for t in tenants if t.enabled]
    excluded = set(selector.exclude)
    chosen = [
        t
        for t in pool
        if t.id not in excluded
        and set(selector.tags) <= set(t.tags)
        and (selector.group is None or t.group == selector.group)
    ]
    if not chosen:
        raise EmptySelection(selector.describe())
    return sorted(chosen, key=lambda t: t.id)
