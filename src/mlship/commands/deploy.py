"""`mlship deploy | rollback | status | down`: blue-green releases with automatic rollback."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlship import cli, notify
from mlship.commands._deploy_status import print_status, repair
from mlship.errors import ConfigError, InfraError, PipelineRejected

if TYPE_CHECKING:
    from mlship.deploy.controller import Controller
    from mlship.deploy.release import Release
    from mlship.settings import Settings

TARGET_HELP = (
    "Where colors run: local (processes, or containers with --image, behind a loopback router), kubernetes "
    "(kubectl; release state in the cluster) or gitops (deploy writes the release into the overlay; status "
    "compares it with the cluster)."
)
ENV_HELP = "Environment: staging or production (production needs --approve)."
NS_HELP = "Kubernetes namespace (default: [tool.mlship.deploy] namespace)."


def _controller(settings: Settings, target: str, env: str, namespace: str | None) -> Controller:
    """The environment's controller (a context manager: `with` closes the target's port-forwards)."""
    # the deploy stack (httpx, the targets) is imported by the command that runs, not by `mlship --help`
    from mlship.deploy.factory import controller  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

    return controller(settings, target, env, namespace)


def _print_result(result: Any) -> None:
    out = cli.console()
    r = result.release
    if result.action in ("shadow", "stop-shadow"):
        doing = "gets copies of live requests on" if result.action == "shadow" else "stopped; it ran on"
        where = f"({result.target}/{result.env})"
        out.print(f"{result.action}: {r.label} {doing} {r.color}; {result.live} stays live {where}")
        out.print(f"live URL: {result.live_url}")
        return
    out.print(f"{result.action}: {r.label} is live on {result.live} ({result.target}/{result.env})")
    if result.weights and len(result.weights) > 1:
        out.print("traffic split: " + ", ".join(f"{c} {w}%" for c, w in result.weights.items()))
    if result.verify:
        out.print(f"verified: {result.verify.reason}")
    out.print(f"live URL: {result.live_url}")


TargetOpt = Annotated[str, typer.Option("--target", help=TARGET_HELP)]
EnvOpt = Annotated[str, typer.Option("--env", help=ENV_HELP)]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help=NS_HELP)]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Model to deploy: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model."),
]
StrategyOpt = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="bluegreen (switch all traffic), canary (send --weight % to it) or shadow (copy live requests "
        "to it, compare its answers; clients only get the live answer).",
    ),
]
WeightOpt = Annotated[int, typer.Option("--weight", help="Canary share of live traffic, in percent.")]
SampleOpt = Annotated[
    float, typer.Option("--sample", help="Shadow: the share of live /predict requests copied, in (0, 1].")
]
StickyOpt = Annotated[
    str | None,
    typer.Option(
        "--sticky-key",
        help="Canary: route by a request key instead of at random, so one user sees one model: "
        "header:X-User-Id or field:customer_id (a field of the record); local target.",
    ),
]
PromoteShadowOpt = Annotated[
    bool,
    typer.Option("--promote-shadow", help="Make the running shadow live: the normal switch and verification."),
]
StopShadowOpt = Annotated[
    bool, typer.Option("--stop-shadow", help="Stop the running shadow (live never moved); writes shadow.md.")
]
ImageOpt = Annotated[
    str | None,
    typer.Option(
        "--image",
        help="Serving image built from deployment/Dockerfile. kubernetes: required, pinned by digest, "
        "with --model. local: run the colors as containers of this local image; its model and "
        "version come from the image itself (no --model).",
    ),
]
PromoteCanaryOpt = Annotated[
    bool, typer.Option("--promote-canary", help="Send all traffic to the running canary, verify, make it live.")
]
FromEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--from-env",
        help="kubernetes: deploy the release this environment verified most recently, as the registry records "
        "it on the model version (model version and image digest). The default for --env production without "
        "--model.",
    ),
]


def deploy(
    ctx: typer.Context,
    model: ModelOpt = None,
    target: TargetOpt = "local",
    env: EnvOpt = "staging",
    approve: Annotated[bool, typer.Option("--approve", help="Approve a production deploy.")] = False,
    namespace: NamespaceOpt = None,
    strategy: StrategyOpt = "bluegreen",
    weight: WeightOpt = 10,
    sample: SampleOpt = 1.0,
    sticky_key: StickyOpt = None,
    promote_shadow: PromoteShadowOpt = False,
    stop_shadow: StopShadowOpt = False,
    image: ImageOpt = None,
    promote_canary: PromoteCanaryOpt = False,
    from_env: FromEnvOpt = None,
) -> None:
    """Blue-green deploy: start the idle color, smoke-test it, switch, verify; roll back on any failure."""
    if target == "gitops":
        _gitops_deploy(ctx, model, image, env, approve, namespace)
        return

    def action(settings: Settings) -> int:
        from mlship.deploy.options import require_approval  # noqa: PLC0415 - the deploy stack: see _controller

        if promote_shadow or stop_shadow:
            return _end_shadow(settings, target, env, namespace, approve, promote=promote_shadow, stop=stop_shadow)
        source = from_env
        if target == "kubernetes" and not promote_canary:  # before anything runs (exit 2)
            source = _check_kubernetes_args(model, image, env, from_env)
        elif from_env is not None:
            raise ConfigError(
                "--from-env needs --target kubernetes",
                hint="a release that passed an environment is an image and a model",
            )
        require_approval(env, approve)
        if not promote_canary and source is None:
            _check_model_options(image, model, target)
        from mlship.deploy.factory import require_staged, verified_release  # noqa: PLC0415 - the deploy stack: see _controller

        with _controller(settings, target, env, namespace) as ctl:
            if not promote_canary:
                ctl.check_options(strategy, weight=weight, sample=sample, sticky=sticky_key)
            staged = None  # production's release is checked against the registry before the cluster is touched
            if source is not None and not promote_canary:
                staged = verified_release(settings, source)
            elif target == "kubernetes" and env == "production" and not promote_canary:
                staged = ctl.resolve(str(model), image=image)
                require_staged(settings, staged)
            ctl.preflight()  # a held lock or a busy port is reported now, before any model loads
            if promote_canary:
                result = ctl.promote_canary()
            else:
                if staged is not None:
                    release = staged
                elif image and target == "local":
                    release = _image_release(image, env)
                else:
                    release = ctl.resolve(str(model), image=image)
                cli.err_console().print(f"deploying {release.label} ({release.uri}) to {target}/{env}…")
                result = ctl.deploy(release, strategy=strategy, weight=weight, sample=sample, sticky=sticky_key)
        _print_result(result)
        notify.deployed(settings, result)
        return 0

    cli.run(ctx, notify.guard("deploy", action, env=env, model=model))


def _end_shadow(
    settings: Settings, target: str, env: str, namespace: str | None, approve: bool, *, promote: bool, stop: bool
) -> int:
    """--promote-shadow / --stop-shadow: one of them, and the shadow's figures written first."""
    from mlship.deploy.options import require_approval  # noqa: PLC0415 - the deploy stack: see _controller

    if promote and stop:
        raise ConfigError("--promote-shadow and --stop-shadow exclude each other", hint="pass one of them")
    require_approval(env, approve)
    with _controller(settings, target, env, namespace) as ctl:
        result = ctl.promote_shadow() if promote else ctl.stop_shadow()
    _print_result(result)
    cli.console().print(f"shadow report: {settings.reports_path / 'shadow.md'}")
    notify.deployed(settings, result)
    return 0


def _check_kubernetes_args(model: str | None, image: str | None, env: str, from_env: str | None) -> str | None:
    """What a kubernetes deploy needs, checked before anything runs (exit 2); returns the source env.

    A kubernetes release is an image pinned by digest plus the model version inside it; production
    takes the release that passed staging unless --model/--image name one (which must have passed too).
    """
    if from_env is None and model is None and image is None and env == "production":
        from_env = "staging"
    if from_env is not None:
        if model or image:
            raise ConfigError(
                "--from-env takes the model and the image from that environment's record",
                hint="pass either --from-env or --model with --image",
            )
        if from_env == env:
            raise ConfigError(f"--from-env {from_env} is the environment being deployed", hint="use --from-env staging")
        return from_env
    if not image:
        raise ConfigError(
            "the kubernetes target needs --image",
            hint="pass the image that was built and scanned, pinned by digest: --image REGISTRY/NAME@sha256:…",
        )
    if "@sha256:" not in image:
        raise ConfigError(
            f"--image {image} is not pinned by digest",
            hint="a tag can move after the scan; pass REGISTRY/NAME@sha256:… (the digest the build printed)",
        )
    if not model:
        raise ConfigError("--model is required", hint="e.g. --model models:/card-fraud@challenger")
    return None


def _gitops_deploy(
    ctx: typer.Context, model: str | None, image: str | None, env: str, approve: bool, namespace: str | None
) -> None:
    """Declare the release in the overlay (a reviewable change); the cluster is not touched."""

    def action(settings: Settings) -> int:
        # the deploy stack: see _controller
        from mlship.deploy.factory import gitops_target  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`
        from mlship.deploy.options import require_approval  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`
        from mlship.deploy.release import resolve_release  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`
        from mlship.deploy.targets.gitops import split_image  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`
        from mlship.registry import Registry  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

        if not model or not image:
            raise ConfigError(
                "the gitops target needs --model and --image",
                hint="e.g. --model models:/card-fraud@challenger --image REGISTRY/NAME@sha256:…",
            )
        split_image(image)
        require_approval(env, approve)
        gitops = gitops_target(settings, env, namespace)
        release = resolve_release(
            Registry.from_settings(settings), settings, model, image=image, env=env, target="gitops"
        )
        color, files = gitops.declare(release)
        out = cli.console()
        out.print(f"declared: {release.label} ({image}) on {color}, live in {env} once applied")
        for path in files:
            out.print(f"wrote {path}")
        out.print("commit and review this change; your GitOps controller applies it (mlship status --target gitops)")
        return 0

    cli.run(ctx, action)


def _gitops_status(settings: Settings, env: str, namespace: str | None, as_json: bool) -> int:
    """Exit 0 when the cluster runs what Git declares, 1 while it does not (a CI step can wait on it)."""
    from mlship.deploy.factory import gitops_target  # noqa: PLC0415 - the deploy stack: see _controller

    info = gitops_target(settings, env, namespace).status()
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0 if info["in_sync"] else 1
    out = cli.console()
    declared = info["declared"]
    live = declared["live"]
    release = declared["colors"].get(live) if live else None
    what = f"{release['name']} v{release['version']} ({release['image']}) on {live}" if release else "nothing"
    out.print(f"gitops/{env}: Git declares {what}; the cluster's live Service selects {info['cluster']['live'] or '-'}")
    if info["in_sync"]:
        out.print("in sync: the cluster runs what Git declares")
        return 0
    raise PipelineRejected(
        "out of sync: " + "; ".join(info["differences"]),
        hint="wait for your GitOps controller to apply the overlay, or check its sync status",
    )


def _check_model_options(image: str | None, model: str | None, target: str) -> None:
    """Usage errors (exit 2) come before anything is checked or started."""
    if image and target == "local":
        if model:  # a local image release: the image carries its model, so --model would be a second truth
            raise ConfigError(
                "--model and --image name the model twice for the local target",
                hint="the image carries its model (see its io.mlship.model.* labels): pass --image alone",
            )
    elif not model:
        raise ConfigError("--model is required", hint="e.g. --model models:/card-fraud@challenger")


def _image_release(image: str, env: str) -> Release:
    """A local image release: model and version come from the image's labels."""
    from mlship.deploy.image import release_from_image  # noqa: PLC0415 - the deploy stack: see _controller

    return release_from_image(image, env=env, target="local")


def rollback(
    ctx: typer.Context,
    to: Annotated[
        str | None, typer.Option("--to", help="A version from the deploy history (default: the previous release).")
    ] = None,
    target: TargetOpt = "local",
    env: EnvOpt = "staging",
    approve: Annotated[bool, typer.Option("--approve", help="Approve a production rollback.")] = False,
    namespace: NamespaceOpt = None,
) -> None:
    """Go back: to the previous color in one switch, or to an older release with a full blue-green deploy."""

    def action(settings: Settings) -> int:
        from mlship.deploy.options import require_approval  # noqa: PLC0415 - the deploy stack: see _controller

        require_approval(env, approve)
        with _controller(settings, target, env, namespace) as ctl:
            result = ctl.rollback(to)
        _print_result(result)
        notify.deployed(settings, result, kind="rollback")
        switch = result.timings_s.get("switch")
        if switch is not None:
            cli.console().print(f"switch took {switch * 1000:.1f} ms")
        return 0

    cli.run(ctx, notify.guard("rollback", action, env=env))


def status(
    ctx: typer.Context,
    target: TargetOpt = "local",
    env: EnvOpt = "staging",
    namespace: NamespaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    shadow_report: Annotated[
        bool,
        typer.Option("--shadow-report", help="Also write the running shadow's figures to shadow.md/shadow.json."),
    ] = False,
) -> None:
    """Live URL, live color, the router, what runs on each color, the release history.

    Exit 0 only when the live path answers /ready (local: through the router); otherwise
    exit 3 with one line saying what is down and how to repair it.
    """

    def action(settings: Settings) -> int:
        if target == "gitops":
            return _gitops_status(settings, env, namespace, as_json)
        with _controller(settings, target, env, namespace) as ctl:
            info = ctl.status()
            if shadow_report:
                json_path, md_path = ctl.shadow_report()
                cli.err_console().print(f"wrote {md_path} and {json_path}")
        if as_json:
            print(json.dumps(info, indent=2, sort_keys=True))
        else:
            print_status(info)
        if info["problem"]:
            raise InfraError(info["problem"], hint=repair(info, env))
        return 0

    cli.run(ctx, action)


def down(
    ctx: typer.Context,
    target: TargetOpt = "local",
    env: EnvOpt = "staging",
    namespace: NamespaceOpt = None,
) -> None:
    """Stop everything a deploy started in this environment (only its own processes); history stays."""

    def action(settings: Settings) -> int:
        with _controller(settings, target, env, namespace) as ctl:
            stopped = ctl.down()
        cli.console().print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("rollback")(rollback)
    app.command("status")(status)
    app.command("down")(down)
