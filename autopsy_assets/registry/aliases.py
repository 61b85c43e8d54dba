"""Alias moves: champion, challenger, previous (no stages; DESIGN.md sections 2a and 5).

MLflow keeps no history of who moved an alias and alias writes are last-writer-wins, so every
move is first recorded in the audit store's `alias_moves` table (model_name, seq = last + 1,
unique), which serialises promotions and rollbacks; only then are the MLflow aliases written.
One operation records one row per alias it changes (to_version None = alias removed). After
writing, the aliases the operation touched are re-synchronised from the latest recorded moves
until no newer move has been recorded meanwhile, so racing operations converge on the trail's
order. Refusals (LifecycleError) happen before anything is recorded or written.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from autopsy_assets.registry.errors import LifecycleError
from autopsy_assets.registry.tracking import ClientLike, get_client, model_name, version_str
from autopsy_assets.registry.versions import _require_text, aliases

_RETRIES = 8

Move = tuple[str, str | None, str | None]  # (alias, from_version, to_version)


def _conflict_type() -> type[Exception]:
    from autopsy_assets.store import AliasMoveConflict

    return AliasMoveConflict


def _check_version(c: MlflowClient, name: str, version: str) -> str:
    try:
        mv = c.get_model_version(name, version)
    except MlflowException as exc:
        raise LifecycleError(f"{name} has no version {version}: nothing to move the alias to",
                             request_id=name) from exc
    return version_str(mv.version)


def _record(store: Any, name: str, moves: Sequence[Move], actor: str, reason: str,
            seq: Any) -> int:
    """Record one operation's moves in order; the first row carries `seq` (the last move the
    caller saw) and raises AliasMoveConflict when someone moved first. Later rows follow the
    operation's own first row; should another move slip in between, they are re-based on it."""
    conflict = _conflict_type()
    last = store.record_alias_move(name, moves[0][0], moves[0][1], moves[0][2], actor, reason,
                                   expected_seq=seq)
    for alias, frm, to in moves[1:]:
        for _ in range(_RETRIES):
            try:
                last = store.record_alias_move(name, alias, frm, to, actor, reason,
                                               expected_seq=last)
                break
            except conflict:
                last = store.last_alias_seq(name)
        else:
            raise RuntimeError(f"{name}: could not record the {alias} move after "
                               f"{_RETRIES} attempts")
    return int(last)


def trail_state(store: Any, name: str) -> dict[str, str | None]:
    """{alias: version or None (removed)} from the latest recorded move of each alias."""
    return _read_trail(store, name)[1]


def _read_trail(store: Any, name: str) -> tuple[int, dict[str, str | None]]:
    """(last seq, trail state) from one read of the model's alias moves."""
    moves = store.alias_moves(name)
    state: dict[str, str | None] = {}
    if moves is None or len(moves) == 0:
        return 0, state
    moves = moves.sort_values("seq")
    for alias, to in zip(moves["alias"], moves["to_version"], strict=True):
        state[str(alias)] = None if to is None or pd.isna(to) or to == "" else str(to)
    return int(moves["seq"].iat[-1]), state


def _current(c: MlflowClient, store: Any, name: str) -> tuple[int, dict[str, str]]:
    """(last seq, the aliases as they stand): the trail's value for every alias it has moved
    (MLflow may lag it while another writer is between recording and writing), MLflow's for
    the others."""
    seq, state = _read_trail(store, name)
    live = aliases(name, client=c)
    for alias, version in state.items():
        if version is None:
            live.pop(alias, None)
        else:
            live[alias] = version
    return seq, live


def _sync(c: MlflowClient, store: Any, name: str, touched: Sequence[str]) -> dict[str, str]:
    """Write the trail's latest value of each touched alias to MLflow; repeat while newer moves
    were recorded meanwhile. Returns the aliases as MLflow now has them."""
    error: MlflowException | None = None
    for attempt in range(_RETRIES * 2):
        seq, state = _read_trail(store, name)
        live = aliases(name, client=c)
        try:
            # previous before champion: a reader never sees the old champion nowhere
            for alias in sorted(touched, key=lambda a: {"previous": 0, "champion": 1}.get(a, 2)):
                if alias not in state:
                    continue
                want = state[alias]
                if want is None:
                    if alias in live:
                        c.delete_registered_model_alias(name, alias)
                elif live.get(alias) != want:
                    c.set_registered_model_alias(name, alias, want)
        except MlflowException as exc:
            # MLflow's SQL store sets an alias by select-then-insert: two writers racing on
            # the same alias make one fail on its unique key. Re-read and write again.
            error = exc
            time.sleep(0.05 * (attempt + 1))
            continue
        error = None
        if store.last_alias_seq(name) == seq:
            break
    if error is not None:
        raise error
    return aliases(name, client=c)


def _operate(c: MlflowClient, store: Any, name: str, plan: Any, actor: str,
             reason: str) -> dict[str, Any]:
    """Read (seq, aliases), let `plan(live)` decide the moves (or raise LifecycleError), record
    them with expected_seq; on a conflict re-read and decide again."""
    conflict = _conflict_type()
    for _ in range(_RETRIES):
        seq, live = _current(c, store, name)
        moves = plan(live)
        try:
            last = _record(store, name, moves, actor, reason, seq)
        except conflict:
            continue
        now = _sync(c, store, name, [m[0] for m in moves])
        return {"model_name": name, "seq": last, "moves": [
            {"alias": a, "from_version": f, "to_version": t} for a, f, t in moves],
            "aliases": now}
    raise LifecycleError(f"{name}: alias moves kept conflicting with other writers "
                         f"({_RETRIES} attempts); try again", request_id=name)


def promote(strategy: str, version: str | int, actor: str, reason: str, store: Any, *,
            client: ClientLike = None) -> dict[str, Any]:
    """Make `version` the champion of `autopsy-meta-<strategy>`; the old champion becomes
    `previous` (and a promoted challenger loses its challenger alias). Recorded in alias_moves
    first. Refuses a missing version, the current champion, and the current challenger (use
    `promote_challenger`, which needs the A/B evidence)."""
    c = get_client(client)
    name = model_name(strategy)
    actor = _require_text(actor, "actor", name)
    version = _check_version(c, name, version_str(version))
    return _promote(c, store, name, version, actor, reason, allow_challenger=False)


def _promote(c: MlflowClient, store: Any, name: str, version: str, actor: str, reason: str,
             *, allow_challenger: bool) -> dict[str, Any]:
    def plan(live: dict[str, str]) -> list[Move]:
        old = live.get("champion")
        if old == version:
            raise LifecycleError(f"{name} version {version} is already the champion",
                                 request_id=name)
        if live.get("challenger") == version and not allow_challenger:
            raise LifecycleError(
                f"{name} version {version} is the challenger: promote it with "
                "promote_challenger, which needs its A/B arm to be no worse than the champion's",
                request_id=name)
        moves: list[Move] = [("champion", old, version)]
        if old is not None:
            moves.append(("previous", live.get("previous"), old))
        if live.get("challenger") == version:
            moves.append(("challenger", version, None))
        return moves

    return _operate(c, store, name, plan, actor, reason or "promote")


def rollback_alias(strategy: str, actor: str, reason: str, store: Any, *,
                   client: ClientLike = None) -> dict[str, Any]:
    """Champion back to `previous` (which is then removed: a second rollback needs a new
    promotion first). Refuses when there is no previous version. Alias moves only; the full
    rollback, which also marks the champion's retrain request rolled_back, is
    `lifecycle.rollback`."""
    c = get_client(client)
    name = model_name(strategy)
    actor = _require_text(actor, "actor", name)
    return _rollback(c, store, name, actor, reason)


def _rollback(c: MlflowClient, store: Any, name: str, actor: str, reason: str,
              expect_champion: str | None = None) -> dict[str, Any]:
    def plan(live: dict[str, str]) -> list[Move]:
        prev, champ = live.get("previous"), live.get("champion")
        if prev is None:
            raise LifecycleError(f"{name} has no previous version to roll back to "
                                 f"(champion: {champ or 'none'})", request_id=name)
        if expect_champion is not None and champ != expect_champion:
            raise LifecycleError(f"{name}: the champion is now version {champ}, not "
                                 f"{expect_champion}; nothing was rolled back", request_id=name)
        return [("champion", champ, prev), ("previous", prev, None)]

    return _operate(c, store, name, plan, actor, reason or "rollback")


def set_challenger(strategy: str, version: str | int | None, actor: str, reason: str,
                   store: Any, *, client: ClientLike = None) -> dict[str, Any]:
    """Point `challenger` at `version` (None removes it). The champion cannot be its own
    challenger."""
    c = get_client(client)
    name = model_name(strategy)
    actor = _require_text(actor, "actor", name)
    target = None if version is None else _check_version(c, name, version_str(version))

    def plan(live: dict[str, str]) -> list[Move]:
        if target is not None and live.get("champion") == target:
            raise LifecycleError(f"{name} version {target} is the champion; it cannot also be "
                                 "the challenger", request_id=name)
        if live.get("challenger") == target:
            raise LifecycleError(f"{name}: the challenger is already "
                                 f"{target or 'unset'}", request_id=name)
        return [("challenger", live.get("challenger"), target)]

    return _operate(c, store, name, plan, actor, reason or "set challenger")


def promote_challenger(strategy: str, actor: str, reason: str, arm_audits: pd.DataFrame,
                       store: Any, *, client: ClientLike = None, min_rows: int = 30,
                       tolerance: float = 0.0) -> dict[str, Any]:
    """Promote the current challenger when its A/B arm is no worse than the champion's on the
    agreed metric (false-positive rate of finished audits, `ab.compare_arms`)."""
    from autopsy_assets.registry.ab import compare_arms

    c = get_client(client)
    name = model_name(strategy)
    actor = _require_text(actor, "actor", name)
    live = aliases(name, client=c)
    chall = live.get("challenger")
    if chall is None:
        raise LifecycleError(f"{name} has no challenger to promote", request_id=name)
    passed, evidence = compare_arms(arm_audits, min_rows=min_rows, tolerance=tolerance)
    if not passed:
        raise LifecycleError(f"{name}: challenger version {chall} not promoted: "
                             f"{evidence['reason']}", request_id=name)
    return _promote(c, store, name, chall, actor,
                    f"{reason or 'promote challenger'} (A/B: {evidence['reason']})",
                    allow_challenger=True)
