"""Writing commands: author signed ops with the local identity."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gossipmind.cli.common import (
    Ctx,
    check_output_path,
    errors,
    now_ms,
    parse_hex,
    pass_ctx,
    passphrase_option,
    read_passphrase,
    resolve_prefix,
)
from gossipmind.cli.output import console, esc, print_json, short
from gossipmind.core.encoding import encode
from gossipmind.core.errors import ConfigError, InvalidOp, NotFound, StoreError
from gossipmind.core.policy import Policy
from gossipmind.core.recipe import RISKS, STEP_TYPES, check_recipe
from gossipmind.core.replica import create_genesis
from gossipmind.core.schema import MAX_COUNTER, ROLES, fix_id
from gossipmind.learn.patterns import MAX_MS
from gossipmind.store.datadir import dump_genesis, load_genesis, write_atomic
from gossipmind.store.keyfile import new_identity, write_key
from gossipmind.store.sqlite import Store, StoreLocked

_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _done(op_id: bytes, what: str, as_json: bool, **extra: Any) -> None:
    if as_json:
        print_json({"op": op_id, **extra})
    else:
        console.print(f"{esc(what)} [dim](op {short(op_id)})[/]")


Check = Callable[[bytes], None]
LOCK_WAIT_S = 5.0  # how long a writing command waits for another one to let go of the store
API_POLL_S = 0.25  # while it waits: how often it looks for a node's API (a node starting)
# a write through a node's API: its first write may wait 10 s for a sync (WRITE_GATE_S)
NODE_WRITE_TIMEOUT_S = 30.0


def _write(ctx: Ctx, kind: str, body: dict[str, Any], check: Check | None = None) -> bytes:
    """Sign an op with the local identity: directly in the store, or — when a running
    node holds the store — through that node's local API (the node signs it).

    When another process holds the store and no node API is found, it is taken to
    be another writing command (agents run them in parallel) or a node starting:
    this one waits up to :data:`LOCK_WAIT_S` for the store, or for the node's API
    (then it writes through it), before it gives up.

    ``check``, if given, is called with the signer's public key before anything is
    written, to refuse an op that would be valid but pointless (e.g. reviewing
    one's own goal)."""
    try:
        store = ctx.store()
    except StoreLocked:
        waited = _wait_for_store(ctx)
        if waited is None:
            return _write_via_node(ctx, kind, body, check)
        store = waited
    with store:
        identity = ctx.identity()
        if check is not None:
            check(identity.public)
        return store.create_op(identity, kind, body, now_ms()).id


def _held(ctx: Ctx, why: object, *, waited: bool = True) -> StoreLocked:
    longer = f" for more than {LOCK_WAIT_S:g} s" if waited else ""
    return StoreLocked(
        f"{ctx.dir.store} is held{longer} by another process that serves no local API "
        "(another gossipmind command, or a node started with --no-api), so nothing was "
        f"written; try again, or stop that node or serve its API ({why})"
    )


def _wait_for_store(ctx: Ctx) -> Store | None:
    """The store once another process lets go of it (at most LOCK_WAIT_S), or None
    as soon as a running node serves an API: write through it.

    The API is looked for again every :data:`API_POLL_S` of the wait: a node
    starting takes the store's lock well before it writes ``api.json``."""
    from gossipmind.api.transport import NodeNotFound, discover

    deadline = time.monotonic() + LOCK_WAIT_S
    for _ in range(int(LOCK_WAIT_S / API_POLL_S) + 2):  # bounded in count and in time
        try:
            discover(ctx.dir.root)
        except NodeNotFound as exc:
            why = exc
        else:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return Store.open(ctx.dir.store, wait=min(API_POLL_S, left))
        except StoreLocked:
            pass
    raise _held(ctx, why) from None


def _write_via_node(ctx: Ctx, kind: str, body: dict[str, Any], check: Check | None) -> bytes:
    from gossipmind.api.transport import Http, NodeNotFound, discover

    try:
        url, token = discover(ctx.dir.root)  # refuses a stale api.json: never leak the token
    except NodeNotFound as exc:  # the node stopped meanwhile
        raise _held(ctx, exc, waited=False) from None
    http = Http(url, token, timeout=NODE_WRITE_TIMEOUT_S)
    try:
        if check is not None:
            status, doc = http.request("GET", "/v1/status")
            if status != 200 or not isinstance(doc, dict) or "key" not in doc:
                raise ConfigError(f"the node did not tell its key (HTTP {status})")
            check(bytes.fromhex(str(doc["key"])))
        status, doc = http.request("POST", "/v1/ops", {"kind": kind, "body": encode(body).hex()})
    finally:
        http.close()
    if status == 201:
        return bytes.fromhex(doc["op"])
    message = doc.get("error", f"HTTP {status}") if isinstance(doc, dict) else f"HTTP {status}"
    if status in (403, 409):
        code = str(doc.get("code", "rejected"))
        raise InvalidOp(code, message.removeprefix(f"{code}: "))
    raise ConfigError(f"the node refused the op: {message}")


@click.command()
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Encrypt the key with the passphrase in this file (it must not be empty).",
)
@_json
@pass_ctx
@errors
def init(ctx: Ctx, passphrase_file: Path | None, as_json: bool) -> None:
    """Create the data dir and a new Ed25519 identity (key file mode 0600)."""
    passphrase = read_passphrase(passphrase_file) if passphrase_file else None
    ctx.dir.ensure()
    identity = new_identity()
    write_key(ctx.dir.key, identity, passphrase)
    if as_json:
        print_json({"data_dir": str(ctx.dir.root), "key": identity.public})
    else:
        console.print(f"data dir  {esc(ctx.dir.root)}")
        console.print(f"identity  {identity.public.hex()}")


@click.command()
@passphrase_option
@_json
@pass_ctx
@errors
def whoami(ctx: Ctx, as_json: bool) -> None:
    """Print the public key of the local identity."""
    public = ctx.identity().public
    if as_json:
        print_json({"key": public, "data_dir": str(ctx.dir.root)})
    else:
        click.echo(public.hex())


@click.group()
def network() -> None:
    """Create or join a network."""


def load_policy(path: str | None) -> Policy:
    if path is None:
        return Policy()
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read policy {path}: not UTF-8 text") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read policy {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"policy {path} must be a JSON object, not {_json_type(doc)}")
    merged = {**Policy().to_body(), **doc}
    return Policy.from_body(merged)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return "null" if value is None else names.get(type(value), "a number")


@network.command("create")
@click.option("--name", required=True, help="A human name for the network.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    help="JSON policy overriding the defaults (see docs/protocol.md §5).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the genesis file here.")
@passphrase_option
@_json
@pass_ctx
@errors
def network_create(
    ctx: Ctx, name: str, policy_file: str | None, out: str | None, as_json: bool
) -> None:
    """Create a network: sign its genesis (you become its first admin)."""
    if out:
        check_output_path(Path(out), "--out")
    policy = load_policy(policy_file)
    identity = ctx.identity()
    if ctx.dir.store.exists():
        raise StoreError(f"{ctx.dir.store} already exists: this data dir has a network")
    genesis = create_genesis(identity, name, policy, os.urandom(16), now_ms())
    Store.create(ctx.dir.store, genesis).close()
    text = dump_genesis(genesis)
    write_atomic(ctx.dir.genesis, text)
    if out:
        Path(out).write_text(text)
    if as_json:
        print_json({"network": genesis.id, "genesis_file": str(out or ctx.dir.genesis)})
    else:
        console.print(f"network   {genesis.id.hex()}  ({esc(name)})")
        console.print(f"genesis   {esc(out or ctx.dir.genesis)}  (share it with members)")


@network.command("join")
@click.argument("genesis_file", type=click.Path(dir_okay=False))
@_json
@pass_ctx
@errors
def network_join(ctx: Ctx, genesis_file: str, as_json: bool) -> None:
    """Start a replica of the network described by GENESIS_FILE."""
    genesis = load_genesis(Path(genesis_file))
    ctx.dir.ensure()
    if ctx.dir.store.exists():
        raise StoreError(f"{ctx.dir.store} already exists: this data dir has a network")
    Store.create(ctx.dir.store, genesis).close()
    write_atomic(ctx.dir.genesis, dump_genesis(genesis))
    if as_json:
        print_json({"network": genesis.id})
    else:
        console.print(f"joined    {genesis.id.hex()}  ({esc(genesis.body['name'])})")


@click.command()
@click.argument("key")
@click.option("--role", type=click.Choice(ROLES), required=True, help="The role to grant.")
@click.option("--tier", type=click.IntRange(1, 3), help="Verifier tier (3 is a person).")
@click.option("--scope", "scopes", multiple=True, help="Verifier scope (repeatable; * = all).")
@click.option("--name", default="", help="A label for the member.")
@passphrase_option
@_json
@pass_ctx
@errors
def grant(
    ctx: Ctx,
    key: str,
    role: str,
    tier: int | None,
    scopes: tuple[str, ...],
    name: str,
    as_json: bool,
) -> None:
    """Grant KEY (a public key in hex) a role. Requires admin."""
    body: dict[str, Any] = {"member": parse_hex(key, "KEY"), "role": role}
    if role == "verifier":
        if tier is None or not scopes:
            raise click.UsageError("a verifier grant needs --tier and at least one --scope")
        body.update(tier=tier, scopes=sorted(set(scopes)))
    elif tier is not None or scopes:
        raise click.UsageError("--tier and --scope apply to --role verifier only")
    if name:
        body["name"] = name
    _done(_write(ctx, "member.grant", body), f"granted {role} to {key[:16]}", as_json)


@click.command()
@click.argument("key")
@click.option("--retroactive", is_flag=True, help="Key compromised: void every op it ever signed.")
@click.option("--reason", default="", help="Why (recorded in the op).")
@click.option(
    "--force", is_flag=True, help="Revoke even the last admin (nobody can administer after)."
)
@passphrase_option
@_json
@pass_ctx
@errors
def revoke(ctx: Ctx, key: str, retroactive: bool, reason: str, force: bool, as_json: bool) -> None:
    """Revoke KEY's membership (plain: its later ops are void). Requires admin.

    KEY must be a member not yet revoked (a plain revoke may be made retroactive);
    revoking the last admin needs --force."""
    member = parse_hex(key, "KEY")
    _check_revocable(ctx, member, retroactive, force)
    body = {"member": member, "retroactive": retroactive, "reason": reason}
    _done(_write(ctx, "member.revoke", body), f"revoked {key[:16]}", as_json)


def _check_revocable(ctx: Ctx, member: bytes, retroactive: bool, force: bool) -> None:
    """Refuse, before writing, a revoke that would do nothing or lock the network."""
    with ctx.reader() as r:
        rows = r.members()
        open_membership = bool(r.status()["policy"].get("open_membership"))
    row = next((m for m in rows if m["key"] == member), {"roles": [], "revoked": ""})
    who, revoked = member.hex()[:16], row["revoked"]
    if not (row["roles"] or revoked or open_membership):
        raise NotFound(f"{who} is not a member of this network: nothing to revoke")
    if revoked == "retroactive" or (revoked and not retroactive):
        more = "" if revoked == "retroactive" else " (--retroactive voids its earlier ops)"
        raise InvalidOp("revoked", f"{who} is already revoked{more}: nothing written")
    admins = {m["key"] for m in rows if "admin" in m["roles"] and not m["revoked"]}
    if admins == {member} and not force:
        raise InvalidOp(
            "last_admin",
            f"{who} is the last admin: revoking it leaves nobody to administer the "
            "network (pass --force to do it anyway; nothing written)",
        )


def parse_recipe(text: str) -> dict[str, Any]:
    source = text
    if not text.lstrip().startswith("{"):
        try:
            source = Path(text).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"cannot read recipe file {text}: not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"cannot read recipe file {text}: {exc.strerror}") from exc
    try:
        recipe = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"recipe is not valid JSON: {exc}") from exc
    check_recipe(recipe)
    return recipe  # type: ignore[no-any-return]


@click.command()
@click.option("--pattern", required=True, help="Pattern id (or a unique prefix).")
@click.option(
    "--recipe",
    "recipe_src",
    required=True,
    help=f"Recipe as JSON or a JSON file. Steps: {', '.join(STEP_TYPES)}.",
)
@click.option(
    "--risk",
    type=click.Choice(RISKS),
    default="low",
    show_default=True,
    help="Your claim; the policy's floor may raise it.",
)
@click.option("--rationale", default="", help="The lesson in words.")
@click.option(
    "--origin",
    type=click.Choice(["human", "synth"]),
    default="human",
    show_default=True,
    help="Who wrote the recipe (human needs the teacher role).",
)
@passphrase_option
@_json
@pass_ctx
@errors
def propose(
    ctx: Ctx,
    pattern: str,
    recipe_src: str,
    risk: str,
    rationale: str,
    origin: str,
    as_json: bool,
) -> None:
    """Propose a fix (a declarative recipe) for a pattern."""
    recipe = parse_recipe(recipe_src)
    pid = resolve_prefix(ctx, pattern, "pattern")
    body = {
        "pattern": pid,
        "recipe": recipe,
        "risk": risk,
        "rationale": rationale,
        "origin": origin,
    }
    fid = fix_id(pid, recipe)
    _done(_write(ctx, "fix.propose", body), f"proposed fix {fid.hex()}", as_json, fix=fid)


@click.command()
@click.argument("fix")
@click.option("--accept/--reject", "accept", required=True, help="Your verdict.")
@click.option("--reason", "reasons", multiple=True, help="A reason (repeatable).")
@click.option("--scope", help="Scope you attest under (default: the fix's scope).")
@passphrase_option
@_json
@pass_ctx
@errors
def attest(
    ctx: Ctx,
    fix: str,
    accept: bool,
    reasons: tuple[str, ...],
    scope: str | None,
    as_json: bool,
) -> None:
    """Attest a fix as a verifier: accept or reject it."""
    fid = resolve_prefix(ctx, fix, "fix")
    if scope is None:
        with ctx.reader() as r:
            rows = [f for f in r.fixes() if f["fix"] == fid]
        if not rows:
            raise click.UsageError("unknown fix here: pass --scope explicitly")
        scope = rows[0]["scope"]
    verdict = "accept" if accept else "reject"
    body = {"fix": fid, "scope": scope, "verdict": verdict, "reasons": list(reasons)}
    _done(_write(ctx, "fix.attest", body), f"{verdict}ed fix {short(fid)}", as_json)


@click.command()
@click.argument("fix")
@click.option(
    "--attempts",
    type=click.IntRange(1, MAX_COUNTER),
    required=True,
    help="Calls made under the fix.",
)
@click.option(
    "--successes",
    type=click.IntRange(0, MAX_COUNTER),
    required=True,
    help="Of those, how many succeeded.",
)
@passphrase_option
@_json
@pass_ctx
@errors
def outcome(ctx: Ctx, fix: str, attempts: int, successes: int, as_json: bool) -> None:
    """Report how a fix did: attempts and successes."""
    if successes > attempts:
        raise click.BadParameter("--successes cannot exceed --attempts")
    fid = resolve_prefix(ctx, fix, "fix")
    t = now_ms()
    body = {"fix": fid, "attempts": attempts, "successes": successes, "window": [t, t]}
    _done(_write(ctx, "fix.outcome", body), f"outcome {successes}/{attempts}", as_json)


@click.command("revoke-fix")
@click.argument("fix")
@click.option("--reason", required=True, help="Why (recorded in the op).")
@click.option("--scope", help="Scope you revoke under (default: the fix's scope).")
@passphrase_option
@_json
@pass_ctx
@errors
def revoke_fix(ctx: Ctx, fix: str, reason: str, scope: str | None, as_json: bool) -> None:
    """Revoke an accepted fix (tombstone). Requires admin or a senior verifier."""
    fid = resolve_prefix(ctx, fix, "fix")
    if scope is None:
        with ctx.reader() as r:
            rows = [f for f in r.fixes() if f["fix"] == fid]
        if not rows:
            raise click.UsageError("unknown fix here: pass --scope explicitly")
        scope = rows[0]["scope"]
    body = {"fix": fid, "scope": scope, "reason": reason}
    _done(_write(ctx, "fix.revoke", body), f"revoked fix {short(fid)}", as_json)


@click.command()
@click.option("--service", required=True, help="The service that failed (e.g. payments).")
@click.option("--operation", required=True, help="The operation (e.g. charge).")
@click.option(
    "--type",
    "exc_type",
    default="Exception",
    show_default=True,
    help="Exception type name (e.g. httpx.ReadTimeout).",
)
@click.option("--message", default="", help="Error message (redacted and templated locally).")
@click.option("--status", type=click.IntRange(100, 599), help="HTTP status code, if any.")
@click.option("--latency-ms", type=click.IntRange(0, MAX_MS), help="How long the call took.")
@click.option(
    "--retry-after-ms", type=click.IntRange(0, MAX_MS), help="Retry-After the server sent."
)
@click.option(
    "--count",
    type=click.IntRange(1, 1_000_000),
    default=1,
    show_default=True,
    help="How many times it happened.",
)
@passphrase_option
@_json
@pass_ctx
@errors
def report(
    ctx: Ctx,
    service: str,
    operation: str,
    exc_type: str,
    message: str,
    status: int | None,
    latency_ms: int | None,
    retry_after_ms: int | None,
    count: int,
    as_json: bool,
) -> None:
    """Report a failure by hand. Only its pattern (never the raw message) is shared."""
    from gossipmind.learn.batcher import ReportBatcher
    from gossipmind.learn.patterns import Failure, reduce

    failure = Failure(
        service, operation, exc_type, message, status, None, latency_ms, retry_after_ms
    )
    reduced = reduce(failure)
    batcher = ReportBatcher()
    t = now_ms()
    for _ in range(count):
        batcher.add(reduced, t)
    (body,) = batcher.flush(t)
    op_id = _write(ctx, "pattern.report", body)
    _done(
        op_id,
        f"reported pattern {reduced.pattern.hex()} ({reduced.error_class}: {reduced.template})",
        as_json,
        pattern=reduced.pattern,
        template=reduced.template,
        error_class=reduced.error_class,
    )
