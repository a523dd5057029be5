"""python -m services.web: serve the web page with the configuration (services/web/service.py)."""

from .service import main

if __name__ == "__main__":
    main()
