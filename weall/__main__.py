from __future__ import annotations

from weall.cli import main

if __name__ == "__main__":
    main()
