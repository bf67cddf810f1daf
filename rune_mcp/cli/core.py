"""Core commands: `rune config show`, `rune doctor`, `rune demo`."""

from __future__ import annotations

import argparse
from typing import Any

from rune_mcp.cli.output import command, emit_json, table
from rune_mcp.config import Settings, describe


def register(sub: Any) -> None:
    config = sub.add_parser("config", help="show the effective settings")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    command(config_sub, "show", config_show, "print every setting, its value and its source",
            json=True)
    doctor = command(sub, "doctor", doctor_cmd, "check that Rune can run on this machine",
                     json=True)
    doctor.add_argument("--repair", action="store_true",
                        help="move damaged state files aside and start them afresh")
    command(sub, "demo", demo_cmd, "run Rune's main loop on the embedded default model")


def config_show(args: argparse.Namespace, settings: Settings) -> int:
    rows = describe(settings)
    if args.json:
        emit_json({"config_file": str(settings.config_file), "settings": rows})
    else:
        print(f"# config file: {settings.config_file}")
        print(table(rows, ["name", "value", "source", "help"], width=70))
    return 0


def doctor_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.doctor import repair, run_checks
    from rune_mcp.quarantine import quarantined

    repaired = repair(settings) if args.repair else []
    checks = run_checks(settings)
    ok = all(c.ok for c in checks if c.required)
    if args.json:
        out: dict[str, Any] = {"ok": ok, "checks": [c.to_dict() for c in checks],
                               "quarantined": [q.to_dict() for q in quarantined(settings.home)]}
        if args.repair:
            out["repaired"] = repaired
        emit_json(out)
    else:
        if args.repair:
            print("\n".join(f"repaired: {line}" for line in repaired) or "nothing to repair.")
        for c in checks:
            mark = "ok " if c.ok else ("FAIL" if c.required else "warn")
            print(f"[{mark}] {c.name}: {c.detail}")
            if not c.ok and c.fix:
                print(f"       fix: {c.fix}")
        print("Rune can run here." if ok else "Rune cannot run here until the items above are fixed.")
    return 0 if ok else 1


def demo_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.demo import run_demo

    return run_demo(settings)
