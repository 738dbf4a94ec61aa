"""`fink-pipeline request standing add|list|remove`: transfers replayed every morning.

A standing request is a request without dates; each morning the orchestrator's
`standing_request_sensor` transfers the night just finished for every standing request
(see fink_pipeline/transfer/standing.py).
"""

from __future__ import annotations

import argparse

from fink_pipeline import paths
from fink_pipeline.cli.request import add_selection_flags


def _store(args: argparse.Namespace):
    from fink_pipeline.transfer.standing import StandingStore

    return StandingStore(args.root or paths.state_dir() / "standing")


def _request_actions(subparsers) -> argparse._SubParsersAction | None:
    """The action holding `request`'s sub-commands (registered by fink_pipeline.cli.request)."""
    request = subparsers.choices.get("request")
    if request is None:
        return None
    # argparse has no public accessor for a parser's sub-command action.
    return next((a for a in request._actions if isinstance(a, argparse._SubParsersAction)), None)


def register(subparsers) -> None:
    actions = _request_actions(subparsers)
    if actions is None:  # `request` is not registered: offer the commands at the top level
        actions = subparsers
    parser = actions.add_parser("standing", help="manage standing requests, replayed each morning on the last night")
    commands = parser.add_subparsers(dest="standing_command", required=True, metavar="ACTION")

    add = commands.add_parser("add", help="register a standing request (request keys without dates)")
    add.add_argument("name", help="name (lower-case letters, digits, '-', '_'); it ends up in topic names")
    add.add_argument("file", nargs="?", default=None,
                     help="request YAML (Fink portal export or flat keys) without dates; flags override it")
    add.add_argument("--survey", default=None)
    add.add_argument("--classes", nargs="+", default=None, metavar="CLASS")
    add_selection_flags(add)
    add.add_argument("--condition", dest="conditions", action="append", default=None, metavar="SQL",
                     help="extra condition (repeatable)")
    add.add_argument("--content", default=None, help="light, medium, full or comma-separated fields")
    add.add_argument("--limit", type=int, default=None)
    add.add_argument("--replace", action="store_true", help="overwrite an existing standing request of that name")
    add.add_argument("--root", default=None, help="standing requests folder (default: state dir / standing)")
    add.add_argument("--archive", default=None, help="archive root the request is checked against "
                     "(default: state dir / archive)")
    add.set_defaults(func=run_add)

    listing = commands.add_parser("list", help="list standing requests")
    listing.add_argument("--root", default=None)
    listing.set_defaults(func=run_list)

    remove = commands.add_parser("remove", help="remove a standing request")
    remove.add_argument("name")
    remove.add_argument("--root", default=None)
    remove.set_defaults(func=run_remove)


def _fields(args: argparse.Namespace) -> dict:
    import yaml

    from fink_pipeline.transfer.request import RequestError

    data: dict = {}
    if args.file:
        try:
            with open(args.file) as handle:
                data = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise RequestError(f"request file {args.file} does not exist") from None
        except yaml.YAMLError as exc:
            raise RequestError(f"request file {args.file} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise RequestError(f"request file {args.file}: expected a mapping of request keys")
    overrides = {"survey": args.survey, "classes": args.classes, "filters": args.filters,
                 "blocks": args.blocks, "conditions": args.conditions, "content": args.content, "limit": args.limit}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def run_add(args: argparse.Namespace) -> int:
    """Validate and store the standing request; print where it is."""
    from fink_pipeline.transfer.standing import standing_from_mapping

    archive = args.archive or str(paths.default_archive_root())
    standing = standing_from_mapping(args.name, _fields(args), archive_root=archive)
    path = _store(args).add(standing, replace=args.replace)
    print(f"standing request {standing.name} stored in {path}; replayed each morning on the night just finished")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """One line per standing request: name, survey, classes, content."""
    store = _store(args)
    names = store.names()
    if not names:
        print(f"no standing request in {store.root}")
        return 0
    for name in names:
        try:
            fields = store.load(name).fields
        except ValueError as exc:
            print(f"{name}: INVALID ({exc})")
            continue
        classes = fields.get("classes") or fields.get("fclass") or "all classes"
        print(f"{name}: survey={fields.get('survey', 'ztf')} classes={classes} content={fields.get('content', 'light')}"
              + (f" conditions={fields['conditions']}" if fields.get("conditions") else ""))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Remove a standing request (exit 2 with a message when it does not exist)."""
    from fink_pipeline.transfer.request import RequestError

    store = _store(args)
    if not store.remove(args.name):
        raise RequestError(f"no standing request {args.name!r} in {store.root}")
    print(f"standing request {args.name} removed")
    return 0
