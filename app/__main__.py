"""`python -m app`: serve the catalog with settings from the environment."""

from __future__ import annotations

import uvicorn

from app.config import get_settings
from app.logs import configure
from app.main import create_app


def main() -> None:
    settings = get_settings()
    configure(settings.log_format, settings.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5)


if __name__ == "__main__":
    main()
