"""The sandbox's fakes live as long as their world: extending it in time (a closed loop's next
day) gives the running fakes the new files; another world starts new fakes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from adperf.sandbox.fake_mmp import FakeMmp
from adperf.sandbox.world import APP_IDS
from tasks import config, resources

from .conftest import END, configure

NEXT = END + dt.timedelta(days=1)


def _report(mmp: object, day: dt.date) -> bytes:
    body: bytes = mmp.render_csv(  # type: ignore[attr-defined]
        app_id=APP_IDS["ios"], organic=False, start=day, end=day, tz="Asia/Seoul"
    )
    return body


def test_extending_the_world_keeps_the_fakes_and_serves_the_new_day(run_root: Path) -> None:
    try:
        first = resources.resources(END)
        process = resources._sandbox["stoppable"][0]
        mmp = resources._sandbox["servers"][1]
        assert _report(mmp, NEXT).count(b"\n") == 1  # the header only: no such day yet

        second = resources.resources(NEXT)  # extends the world by a day

        assert second == first  # the same endpoints
        assert resources._sandbox["stoppable"][0] is process and process.alive()
        world = run_root / "world"
        fresh = FakeMmp(
            installs=pd.read_parquet(world / "installs.parquet"), api_token="fresh-fake"
        )
        served = _report(mmp, NEXT)
        assert served.count(b"\n") > 1
        assert served == fresh.render_csv(
            app_id=APP_IDS["ios"], organic=False, start=NEXT, end=NEXT, tz="Asia/Seoul"
        )

        # Another world (another seed) is not an extension: its own fakes.
        configure(run_root, sandbox={"root": str(run_root / "world2"), "seed": "11"})
        assert config.sandbox().seed == 11
        resources.resources(END)
        assert resources._sandbox["stoppable"][0] is not process and not process.alive()
    finally:
        resources._stop_fakes()


def test_a_copy_of_the_world_in_another_folder_gets_its_own_endpoints(run_root: Path) -> None:
    # world.json is the same in both folders, but payments, logs and ad objects are files of
    # the folder: the fakes and endpoints of the first must not serve the second (a test's
    # copy of a clean run, a backup restored elsewhere).
    import shutil

    try:
        first = resources.resources(END)
        process = resources._sandbox["stoppable"][0]
        shutil.copytree(run_root / "world", run_root / "copy")
        configure(run_root, sandbox={"root": str(run_root / "copy")})
        second = resources.resources(END)
        assert resources._sandbox["stoppable"][0] is not process
        assert str(run_root / "copy") in second.payments_url
        assert str(run_root / "world") in first.payments_url
        assert second.logs_path.startswith(str((run_root / "copy").resolve()))
    finally:
        resources._stop_fakes()
