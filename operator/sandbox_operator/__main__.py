"""Run the operator: ``sandbox-operator`` or ``python -m sandbox_operator`` (configured by SANDBOX_OPERATOR_*)."""

from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

try:
    import kopf

    from sandbox_operator.settings import Settings
except ModuleNotFoundError as missing:  # `pip install sandbox-operator` is the SDK alone
    sys.exit(f"sandbox-operator: {missing.name} is not installed; run the operator from the image, or install it "
             "with: pip install 'sandbox-operator[operator]'")


def main() -> int:
    """Validate the settings, configure logging and run Kopf until it is stopped."""
    try:
        settings = Settings()
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            print(f"invalid setting SANDBOX_OPERATOR_{field.upper()}: {problem['msg']}", file=sys.stderr)
        return 2
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    # The API client logs whole response bodies at DEBUG: they can hold env values, so never let them through.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    if settings.log_level != "DEBUG":
        # Kopf says "Handler '...' succeeded." at INFO for every watch event of every handler: thousands of lines a
        # second in a burst, most of the log and some of the CPU. Its warnings and errors still come through.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Importing these registers their Kopf handlers.
    import sandbox_operator.operator
    import sandbox_operator.pool.handlers
    import sandbox_operator.sandbox.handlers
    import sandbox_operator.tenant.handlers  # noqa: F401

    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.standalone,
            priority=settings.peering_priority,
            peering_name=settings.peering_name,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            memo=kopf.Memo(settings=settings),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
