"""``python -m replay`` is ``assistiv replay`` (and ``python -m replay report ...`` is ``assistiv report``)."""

import sys

if __name__ == "__main__":
    from replay.cli import main

    if sys.argv[1:2] == ["report"]:
        from replay.report import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    sys.exit(main())
