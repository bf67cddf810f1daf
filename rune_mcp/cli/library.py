"""Library commands: `rune adapters ls|show|rm|verify|export|import|merge`, `rune recall`,
`rune library reindex`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rune_mcp.cli import compose
from rune_mcp.cli.output import emit_json, table
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError, UsageError


def register(sub: Any) -> None:
    adapters = sub.add_parser("adapters", help="list, inspect, remove and verify stored adapters")
    actions = adapters.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)

    ls = actions.add_parser("ls", help="list adapters, newest first")
    ls.add_argument("--project", help="only this project (path or folder name)")
    ls.add_argument("--limit", type=int, help="at most this many")
    _json_flag(ls).set_defaults(func=adapters_ls)

    show = actions.add_parser("show", help="print an adapter's manifest and check its files")
    show.add_argument("adapter_id", metavar="ID", help="adapter id or a unique 6+ char prefix")
    _json_flag(show).set_defaults(func=adapters_show)

    rm = actions.add_parser(
        "rm", help="delete an adapter (files and index record) and every merge made from it")
    rm.add_argument("adapter_id", metavar="ID", nargs="?", help="adapter id or unique prefix")
    rm.add_argument("--session", help="instead: delete every adapter learned from this session")
    _json_flag(rm).set_defaults(func=adapters_rm)

    verify = actions.add_parser("verify", help="check every adapter and the index (exit 1 on problems)")
    _json_flag(verify).set_defaults(func=adapters_verify)

    export = actions.add_parser(
        "export", help="write verified adapters to one archive (.tar, or .tar.gz) to share"
    )
    export.add_argument("adapter_ids", metavar="ID", nargs="*", help="adapter ids or prefixes")
    export.add_argument("--project", help="instead: the project's adapters for the current base")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the archive to write (gzip when it ends in .gz or .tgz)")
    _json_flag(export).set_defaults(func=adapters_export)

    imp = actions.add_parser("import", help="check an archive's adapters and add them to the library")
    imp.add_argument("archive", metavar="FILE", help="an archive `rune adapters export` wrote")
    _json_flag(imp).set_defaults(func=adapters_import)
    compose.register(actions)

    recall = sub.add_parser("recall", help="find the adapters whose task is most like TASK")
    recall.add_argument("task", metavar="TASK", help="the task, in words")
    recall.add_argument("--k", type=int, help="how many adapters at most (default: recall_k)")
    recall.add_argument("--project", help="only this project (path or folder name)")
    recall.add_argument("--min-similarity", type=float, help="default: recall_min_similarity")
    _json_flag(recall).set_defaults(func=recall_cmd)

    library = sub.add_parser("library", help="maintain the adapter library")
    library_sub = library.add_subparsers(dest="library_command", metavar="ACTION", required=True)
    reindex = library_sub.add_parser("reindex", help="rebuild the task index from the manifests")
    _json_flag(reindex).set_defaults(func=library_reindex)


def _json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _open(settings: Settings) -> Any:
    from rune_mcp.library import Library

    return Library.open(settings)


def _mib(size: int) -> str:
    return f"{size / 1_048_576:.1f} MiB" if size >= 104_858 else f"{size / 1024:.0f} KiB"


def adapters_ls(args: argparse.Namespace, settings: Settings) -> int:
    found = _open(settings).inventory(project=args.project, limit=args.limit)
    rows = [r.summary() for r in found.records]
    for damage in found.damaged:  # on stderr: the listing's JSON keeps its shape
        print(f"rune: {damage.sentence}", file=sys.stderr)
    if args.json:
        emit_json(rows)
    elif not rows:
        print("no adapters yet; `rune remember TRANSCRIPT` makes one.")
    else:
        shown = [{**r, "id": r["adapter_id"][:12], "size": _mib(r["size_bytes"])} for r in rows]
        print(table(shown, ["id", "created_at", "project", "method", "size", "task"], width=50))
    return 0


def adapters_show(args: argparse.Namespace, settings: Settings) -> int:
    lib = _open(settings)
    record = lib.store.read(lib.store.resolve(args.adapter_id))
    problems = lib.store.problems(record.adapter_id)
    data = {"adapter_id": record.adapter_id, "path": str(record.path), "problems": problems,
            "manifest": record.manifest,
            "lineage": compose.lineage_tree(lib, record.adapter_id),
            "descendants": lib.descendants([record.adapter_id]),
            "self_probes": _self_probes(record)}
    if args.json:
        emit_json(data)
    else:
        manifest = record.manifest
        source = manifest.get("source") or {}
        lines = [
            ("id", record.adapter_id), ("path", record.path), ("task", record.task),
            ("project", source.get("project")), ("session", source.get("session_id")),
            ("agent", source.get("agent")), ("trajectory", source.get("trajectory_id")),
            ("created", record.created_at), ("method", record.method),
            ("rank / alpha", f"{manifest.get('rank')} / {manifest.get('alpha')}"),
            ("targets", ", ".join(manifest.get("target_modules") or [])),
            ("lessons", manifest.get("lesson_count")), ("training", manifest.get("training")),
            ("parents", ", ".join(manifest.get("parents") or []) or "-"),
            ("self-probes", "-" if data["self_probes"] is None else data["self_probes"]),
            ("files", ", ".join(f"{n} ({_mib(i['size'])})" for n, i in manifest["files"].items())),
            ("verified", "ok" if not problems else "FAILED: " + "; ".join(problems)),
        ]
        for key, value in lines:
            print(f"{key:>13}: {value}")
        for line in compose.lineage_lines(lib, record):
            print(line)
    return 1 if problems else 0


def _self_probes(record: Any) -> int | None:
    """How many self-probes the adapter holds (None: none stored); read without loading the
    adapter, so a damaged adapter still shows (its files check is reported beside)."""
    from rune_mcp.library.manifest import SELF_PROBES
    from rune_mcp.library.selfprobes import read_self_probes

    if SELF_PROBES not in record.manifest["files"]:
        return None
    try:
        return len(read_self_probes(record.path / SELF_PROBES))
    except RuneError:
        return None


def adapters_rm(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.adapter_id) == bool(args.session):
        raise UsageError("give either an adapter ID or --session SESSION_ID.")
    lib = _open(settings)
    if args.session:
        # read before: the merges removed with them carry no session of their own
        learned = {r.adapter_id for r in lib.list() if r.session_id == args.session}
        removed = lib.forget_session(args.session)
    else:
        removed = lib.remove_cascade(args.adapter_id)
        learned = set(removed[:1])
    if args.json:
        emit_json({"removed": removed})
    elif not removed:
        print(f"no adapter was learned from session {args.session}.")
    else:
        for adapter_id in removed:
            print(f"removed {adapter_id}" + ("" if adapter_id in learned else
                                             " (composed from a removed adapter)"))
    return 0


def adapters_verify(args: argparse.Namespace, settings: Settings) -> int:
    lib = _open(settings)
    found = lib.verify()
    problems = [p.to_dict() for p in found]
    total = len(lib.store.ids())
    damaged = len({p.adapter_id for p in found if p.kind == "adapter" and p.adapter_id})
    unverified = sum(1 for r in lib.store.records() if not r.text_verified)
    if args.json:
        emit_json({"ok": not problems, "adapters": total, "damaged": damaged,
                   "unverified_text": unverified, "problems": problems})
        return 1 if problems else 0
    if problems:
        print(table(problems, ["adapter_id", "problem"], width=90))
        if damaged:
            print(f"{damaged} of {total} adapters are damaged and never used; "
                  "`rune adapters rm ID` removes one.")
    else:
        print(f"{total} adapters verified; the index matches.")
    if unverified:
        print(f"{unverified} adapters have format 1 manifests, written before Rune recorded a "
              "digest of their task text: their files are verified, their text is not.")
    return 1 if problems else 0


def adapters_export(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from rune_mcp.library.archive import export_adapters

    out = Path(args.output).expanduser()
    result = export_adapters(_open(settings), out, ids=args.adapter_ids, project=args.project)
    if args.json:
        emit_json({"path": str(result.path), "adapters": result.adapter_ids,
                   "size_bytes": result.size_bytes})
    else:
        print(f"exported {len(result.adapter_ids)} adapters to {out} ({_mib(result.size_bytes)}).")
    return 0


def adapters_import(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from rune_mcp.library.archive import import_archive

    result = import_archive(_open(settings), Path(args.archive).expanduser())
    if args.json:
        emit_json({"imported": [r.adapter_id for r in result.imported],
                   "already_present": [r.adapter_id for r in result.present]})
        return 0
    rows = [{"id": r.adapter_id[:12], "status": "imported", "task": r.task} for r in result.imported]
    rows += [{"id": r.adapter_id[:12], "status": "already present", "task": r.task}
             for r in result.present]
    print(table(rows, ["id", "status", "task"], width=60))
    print(f"{len(result.imported)} adapters imported, {len(result.present)} already present.")
    return 0


def recall_cmd(args: argparse.Namespace, settings: Settings) -> int:
    found = _open(settings).recall_checked(
        args.task, k=args.k, project=args.project, min_similarity=args.min_similarity
    )
    for damage in found.skipped:  # on stderr: the hits' JSON keeps its shape
        print(f"rune: skipped: {damage.sentence}", file=sys.stderr)
    rows = [h.to_dict() for h in found.hits]
    if args.json:
        emit_json(rows)
    elif not rows:
        print("no adapter is similar enough to this task.")
    else:
        shown = [{**r, "id": r["adapter_id"][:12]} for r in rows]
        print(table(shown, ["id", "similarity", "project", "task"], width=60))
        for row in shown:  # the table keeps its columns; why a hit is out of order is below
            if row["reason"]:
                print(f"{row['id']} is first: {row['reason']}.")
    return 0


def library_reindex(args: argparse.Namespace, settings: Settings) -> int:
    start = time.perf_counter()
    count = _open(settings).reindex()
    seconds = round(time.perf_counter() - start, 3)
    if args.json:
        emit_json({"indexed": count, "seconds": seconds})
    else:
        print(f"indexed {count} adapters in {seconds} s.")
    return 0
