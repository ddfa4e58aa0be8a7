"""Activity: a camera's video bit rate per step (for a timeline's heat strip) and a search for the
intervals where it rose above the camera's own baseline (`hub/activity.py`)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from hub import activity
from hub.api.fleet import CameraPath
from hub.api.routing import API, Ctx, Endpoint, Params, Services, camera_row, check_range
from hub.api.shapes import CameraId, CameraText, QueryTime, Struct, Timestamp
from shared.http import ApiError
from shared.timeutil import us_to_iso

US = 1_000_000
MAX_DAYS = 7                       # one camera's series or search
MAX_STEPS = 10_000
DEFAULT_STEPS = 1_000
MAX_CAMERAS = 32
MAX_CAMERA_DAYS = 32               # a search reads at most this much series (cameras x days)
_CAMERA = r"[a-z0-9][a-z0-9-]{0,62}\.[a-z0-9][a-z0-9-]{0,62}"


# -- shapes ---------------------------------------------------------------------------------------
class ActivityQuery(Params):
    start: QueryTime
    end: QueryTime
    step: Annotated[int, Meta(ge=1, le=86_400, description="seconds per step (default: the range in about "
                                                           f"{DEFAULT_STEPS} steps; at most {MAX_STEPS} steps)")] \
        | None = None


class ActivitySeries(Struct):
    """The series per step, as arrays of one value per step (null: no footage, or nothing scored)."""
    camera: CameraText
    start: Timestamp
    end: Timestamp
    step_s: int
    threshold: Annotated[float, Meta(description="a second is active when its level exceeds this")]
    kbps: Annotated[list[float | None], Meta(description="mean video bit rate over the step's recorded seconds")]
    motion_kbps: Annotated[list[float | None], Meta(description="mean bit rate of the non-keyframe video over the "
                                                                "step's scored seconds (keyframe seconds left out "
                                                                "when the GOP is longer than 1 s)")]
    level: Annotated[list[float | None], Meta(description="the step's highest second: (bytes - baseline median) / "
                                                          "baseline scale, over the previous hour")]
    keyframes: Annotated[list[int], Meta(description="seconds with a keyframe")]


class SearchQuery(Params):
    cameras: Annotated[str, Meta(pattern=f"^{_CAMERA}(,{_CAMERA}){{0,{MAX_CAMERAS - 1}}}$",
                                 description=f"comma-separated NODE.CAMERA ids (at most {MAX_CAMERAS})")]
    start: QueryTime
    end: QueryTime
    limit: Annotated[int, Meta(ge=1, le=1000, description="at most this many intervals")] = 50
    codes: ClassVar[dict[str, str]] = {"cameras": "bad_camera"}


class ActivityInterval(Struct):
    camera: CameraText
    start: Timestamp
    end: Timestamp
    score: Annotated[float, Meta(description="the sum of the active seconds' levels (strength x duration)")]
    peak_level: float
    active_seconds: int
    motion_kbps: float
    baseline_kbps: float
    explanation: str


class ActivitySearch(Struct):
    start: Timestamp
    end: Timestamp
    cameras: list[CameraText]
    threshold: float
    intervals: Annotated[list[ActivityInterval], Meta(description="best score first")]


# -- handlers -------------------------------------------------------------------------------------
def _load(ctx: Ctx, node: str, cam: str, start_us: int, end_us: int) -> tuple[activity.Seconds, activity.Scored, int]:
    """A camera's series on the seconds [start - 1 h, end), scored, and the offset of `start` in it."""
    start_s = start_us // US - activity.HISTORY_S
    end_s = -(-end_us // US)
    rows = ctx.reader.activity_rows(node, cam, start_s * US, end_s * US)
    sec = activity.assemble(rows, start_s, end_s - start_s)
    return sec, activity.score(sec), activity.HISTORY_S


class Activity:
    def __init__(self, s: Services) -> None:
        self.s = s

    def _check(self, start_us: int, end_us: int, days: float = MAX_DAYS) -> None:
        check_range(start_us, end_us, min(self.s.max_range_us, int(days * 86400 * US)), setting=f"{days:g} days "
                    "for activity")

    def get_series(self, ctx: Ctx) -> ActivitySeries:
        q = ctx.query
        node, cam = ctx.path.camera
        self._check(q.start, q.end)
        camera_row(ctx.reader, node, cam)
        seconds = -(-q.end // US) - q.start // US
        step = q.step or max(1, -(-seconds // DEFAULT_STEPS))
        count = -(-seconds // step)
        if count > MAX_STEPS:
            raise ApiError(400, "too_many_steps", f"{count} steps of {step} s; at most {MAX_STEPS}: take a longer step")
        sec, sc, offset = _load(ctx, node, cam, q.start, q.end)
        steps = activity.downsample(sec, sc, offset, count, step)
        return ActivitySeries(camera=f"{node}.{cam}", start=us_to_iso(q.start // US * US), end=us_to_iso(q.end),
                              step_s=step, threshold=activity.K, kbps=steps.kbps, motion_kbps=steps.motion_kbps,
                              level=steps.level, keyframes=steps.keyframes)

    def search(self, ctx: Ctx) -> ActivitySearch:
        q = ctx.query
        cameras = list(dict.fromkeys(CameraId.parse(c) for c in q.cameras.split(",")))
        self._check(q.start, q.end, min(MAX_DAYS, MAX_CAMERA_DAYS / len(cameras)))
        for c in cameras:
            camera_row(ctx.reader, c.node, c.camera)
        found = []
        for c in cameras:
            sec, sc, offset = _load(ctx, c.node, c.camera, q.start, q.end)
            hi = offset + (-(-q.end // US) - q.start // US)
            found += [(str(c), i) for i in activity.intervals(sc, sec.start_s, offset, hi)]
        found.sort(key=lambda f: -f[1].score)
        return ActivitySearch(
            start=us_to_iso(q.start), end=us_to_iso(q.end), cameras=[str(c) for c in cameras], threshold=activity.K,
            intervals=[ActivityInterval(camera=cam, start=us_to_iso(i.start_s * US), end=us_to_iso(i.end_s * US),
                                        score=i.score, peak_level=i.peak_z, active_seconds=i.active_s,
                                        motion_kbps=i.kbps, baseline_kbps=i.baseline_kbps, explanation=i.why)
                       for cam, i in found[:q.limit]])

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", f"{API}/cameras/{{camera}}/activity", self.get_series,
                     "A camera's video bit rate and activity level per step (from packet sizes, no decoding)",
                     path_params=CameraPath, query=ActivityQuery, response=ActivitySeries),
            Endpoint("GET", f"{API}/activity/search", self.search,
                     "Intervals where cameras' video bit rate rose above their own baseline, best first",
                     query=SearchQuery, response=ActivitySearch),
        ]
