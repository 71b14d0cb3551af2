"""Commands about what there is: `models` and `checkpoints` (list, rm)."""

from __future__ import annotations

from typing import Annotated

import typer

from mnistcli import render
from mnistcli.cli import complete
from mnistcli.cli.common import JsonOpt, app, checkpoints_app, guarded
from mnistcli.errors import MnistError


@app.command()
@guarded
def models(
    pattern: Annotated[
        str,
        typer.Argument(
            help="Shell-style filter, e.g. 'mlp*'; an exact name shows that model in full.",
            metavar="PATTERN",
            autocompletion=complete.model_names,
        ),
    ] = "*",
    json_out: JsonOpt = False,
) -> None:
    """List the registered models with their family and size; `mnist models NAME` shows one's arguments and recipe."""
    with render.starting():
        from mnistcli import api

        api.load("models")  # torch, under the spinner
    if any(c in pattern for c in "*?["):
        render.models_table(api.models(pattern), json_out)
    else:
        render.model_card(api.model(pattern), json_out)


@checkpoints_app.callback(invoke_without_command=True)
@guarded
def checkpoints_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List saved runs: name, model, test accuracy, date and size."""
    if ctx.invoked_subcommand is None:
        with render.starting():
            from mnistcli import api

            api.load("checkpoints")  # torch, under the spinner
        render.checkpoints_table(api.checkpoints(), json_out)
        for name in api.interrupted_runs():
            stopped, busy = api.resumable(name), api.in_use(name)
            if busy is not None:
                done = f" ({stopped[0]} of {stopped[1]} {stopped[2]} done)" if stopped is not None else ""
                render.note(f"{name}: in use by {busy}{done}; listed once it is saved")
            elif stopped is not None:
                render.note(
                    f"{name}: stopped with {stopped[0]} of {stopped[1]} {stopped[2]} done; resume with"
                    f" `mnist train --resume {name}` (or `mnist checkpoints rm {name}`)"
                )
            else:
                render.note(
                    f"{name}: interrupted before saving (log only: `mnist plot {name}`; `mnist checkpoints rm {name}`)"
                )
        for name, problem in api.broken_runs():
            render.error(f"{name}: cannot be read, so it is not listed ({problem}; `mnist checkpoints rm {name}`)")


@checkpoints_app.command("rm")
@guarded
def checkpoints_rm(
    names: Annotated[
        list[str], typer.Argument(help="Run names to delete.", metavar="RUN", autocompletion=complete.run_names)
    ],
) -> None:
    """Delete runs from the store."""
    with render.starting():
        from mnistcli import api

        api.load("remove_checkpoint")  # torch, under the spinner
    failed = False
    for name in names:
        try:
            run = api.remove_checkpoint(name)
            render.note(f"removed {run.name} ({run.path})")
        except MnistError as e:
            render.error(str(e))
            failed = True
    if failed:
        raise typer.Exit(1)
