"""The ``assistiv`` command: serve, platform create, wallet credit, replay, report (CONTRACT)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import trio

from gateway.config import DEFAULT_DATA_DIR, load_config
from ledger.location import ledger_path


def _ledger_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=os.environ.get("ASSISTIV_DATA_DIR", DEFAULT_DATA_DIR))
    parser.add_argument("--database-url", default=os.environ.get("ASSISTIV_DATABASE_URL"))
    parser.add_argument("--config", default=os.environ.get("ASSISTIV_CONFIG"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistiv", description="The Assistiv gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the gateway")
    _ledger_options(serve)
    serve.add_argument("--host", default=os.environ.get("ASSISTIV_HOST"))
    serve.add_argument("--port", type=int, default=os.environ.get("ASSISTIV_PORT"))

    platform = commands.add_parser("platform", help="manage platforms")
    platform_commands = platform.add_subparsers(dest="platform_command", required=True)
    create = platform_commands.add_parser("create", help="create a platform and its first key")
    _ledger_options(create)
    create.add_argument("--name", required=True)
    create.add_argument("--json", action="store_true", help="print the result as JSON")

    wallet = commands.add_parser("wallet", help="the operator's wallet transactions")
    wallet_commands = wallet.add_subparsers(dest="wallet_command", required=True)
    credit = wallet_commands.add_parser("credit", help="record a refund, an adjustment or a top-up of a platform "
                                                       "wallet (gateway/wallet_credit.py)")
    _ledger_options(credit)
    credit.add_argument("--platform", required=True, help="the platform id (plat_...)")
    credit.add_argument("--kind", required=True, choices=("refund", "adjustment", "top_up"))
    credit.add_argument("--amount", required=True, help="USD, at most 6 decimals; an adjustment may be negative")
    credit.add_argument("--description", help="why (required for refunds and adjustments)")
    credit.add_argument("--transaction-id", help="re-running with the same id records nothing new")
    credit.add_argument("--json", action="store_true", help="print the result as JSON")

    commands.add_parser("replay", help="auditor tools (see `assistiv replay --help`)", add_help=False)
    commands.add_parser("report", help="finance reports (see `assistiv report --help`)", add_help=False)
    return parser


def _ledger_path(args: argparse.Namespace, config):
    return ledger_path(args.data_dir, args.database_url or config.ledger.url)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "replay":
        from replay.cli import main as replay_main

        return replay_main(argv[1:])
    if argv and argv[0] == "report":
        from replay.report import main as report_main

        return report_main(argv[1:])
    args = build_parser().parse_args(argv)
    config = load_config(args.config)
    path = _ledger_path(args, config)
    if args.command == "serve":
        from gateway.server import run_serve

        host = args.host or config.server.host
        port = config.server.port if args.port is None else int(args.port)
        return run_serve(config, path, host, port)
    if args.command == "platform" and args.platform_command == "create":
        created = trio.run(_create_platform, path, args.name)
        if args.json:
            print(json.dumps({"platform_id": created["platform_id"], "api_key": created["api_key"]}))
        else:
            print(f"Created platform {args.name!r} ({created['platform_id']}).")
            print(f"Platform API key (shown once): {created['api_key']['raw_key']}")
        return 0
    if args.command == "wallet" and args.wallet_command == "credit":
        return _credit_wallet(config, path, args)
    return 2


def _credit_wallet(config, path, args: argparse.Namespace) -> int:
    from gateway.wallet_credit import CreditRefused, credit_wallet, parse_amount
    from ledger.sqlite import open_sqlite_store

    async def run(amount_micros: int):
        async with open_sqlite_store(path) as store:
            try:
                return await credit_wallet(config, store, args.platform, args.kind, amount_micros, args.description,
                                           args.transaction_id)
            except CreditRefused as refused:
                return refused  # reported below, not through the store's nursery as an exception group

    try:
        result = trio.run(run, parse_amount(args.amount, args.kind))
    except CreditRefused as refused:
        result = refused
    if isinstance(result, CreditRefused):
        print(f"assistiv wallet credit: {result}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        txn = result["transaction"]
        print(f"Recorded {txn['type']} {txn['id']} of {txn['amount']} USD on {args.platform}; "
              f"balance {result['balance']} USD.")
    return 0


async def _create_platform(path, name: str) -> dict:
    from gateway.platforms import create_platform
    from ledger.sqlite import open_sqlite_store

    async with open_sqlite_store(path) as store:
        return await create_platform(store, name)


if __name__ == "__main__":
    sys.exit(main())
