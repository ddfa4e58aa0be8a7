#!/usr/bin/python3
"""Fake RTSP cameras for Vigil's tests, demo and benchmarks (GStreamer RTSP server).

One process, one port, many mounts (``rtsp://HOST:PORT/NAME``).  Run it with
Debian's interpreter, because the GStreamer bindings (``gi``) exist only there;
it uses the standard library and ``gi`` only::

    /usr/bin/python3 tools/testcam.py --port 8554 \\
        --mount cam1=h264file:/tmp/media/h264-360p.h264 \\
        --mount cam2=live-h264-aac,size=1280x720 \\
        --mount secure=h264file:/tmp/media/h264-360p.h264,auth=user:secret

Mount specs (``NAME=KIND[:PATH][,OPTION=VALUE ...]``):

``NAME=h264file:/path/file.h264``
    Loop a raw Annex-B H.264 file forever, paced in real time, no encoding
    (cheap: use these for most tests).  Make files with ``tools/testmedia.py``:
    no B-frames and a whole number of GOPs.  Option ``fps=N`` (default 15) must
    match the file's frame rate.
``NAME=h265file:/path/file.h265``
    The same for H.265.
``NAME=h264file-midgop:/path/file.h264,skip=N``
    An ``h264file`` camera that does not start a GOP at PLAY: its first client
    gets the loop from frame N on (P-frames), so the first keyframe arrives
    (GOP - N) frames after PLAY, as from a camera joined mid-GOP.  It prints
    ``FIRST-FRAME NAME <µs since the Unix epoch>`` on stderr when it sends the
    first frame of each pipeline (``skip`` defaults to 20).
``NAME=live-h264-bframes-midgop[,skip=N]``
    The same for a live x264 stream with two B-frames between references and
    a keyframe every 2 s (``size``, ``fps`` apply): the frames presented before
    frame N are never sent, and the server's request for a keyframe when a
    client joins is ignored.
``NAME=live-h264``
    Live ``videotestsrc`` encoded by x264 (default 640x360 at 15 fps, keyframe
    every 2 s).  Options ``size=WxH`` and ``fps=N``.
``NAME=live-h264-aac`` / ``live-h264-opus`` / ``live-h264-pcmu``
    Live video as above plus a sine tone as AAC (48 kHz mono), Opus (48 kHz
    mono) or G.711 µ-law (8 kHz mono; a codec MP4 cannot carry).
``,auth=USER:PASS`` (any kind)
    That mount needs HTTP basic auth with these credentials; others stay open.

PATH and PASS must not contain a comma.  Once the server listens it prints
exactly one line ``READY rtsp://HOST:PORT`` on stdout (``--port 0`` picks a free
port and prints it).  Exit status: 0 after SIGTERM/SIGINT, 2 for bad arguments,
3 when the address cannot be bound.

Every mount is shared: one pipeline per mount for all its clients, built on
the first client and torn down after the last one leaves.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as _exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"testcam: GStreamer Python bindings unavailable ({_exc}).\n"
        "Run with /usr/bin/python3 and install gir1.2-gst-rtsp-server-1.0 python3-gi.\n")
    sys.exit(2)

EXIT_USAGE = 2
EXIT_BIND = 3

FILE_KINDS = {
    # kind: (caps media type, parser, payloader)
    "h264file": ("video/x-h264", "h264parse", "rtph264pay"),
    "h265file": ("video/x-h265", "h265parse", "rtph265pay"),
}

# Audio branch of each live kind (None = video only).  The payloader must be
# named pay1 (pay0 is the video) for the RTSP server to expose it as a stream.
LIVE_KINDS = {
    "live-h264": None,
    "live-h264-aac": (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
        "! audio/x-raw,rate=48000,channels=1 ! audioconvert "
        "! avenc_aac ! rtpmp4gpay name=pay1 pt=97"),
    "live-h264-opus": (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
        "! audio/x-raw,rate=48000,channels=1 ! audioconvert "
        "! opusenc ! rtpopuspay name=pay1 pt=97"),
    # G.711 is 8 kHz by definition (static payload type 0).
    "live-h264-pcmu": (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
        "! audio/x-raw,rate=8000,channels=1 ! audioconvert "
        "! mulawenc ! rtppcmupay name=pay1 pt=0"),
}

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
OPTION_KEYS = ("fps", "size", "auth", "skip")
# kind: the file kind it serves like (None: a live x264 stream with B-frames)
MIDGOP_KINDS = {"h264file-midgop": "h264file", "live-h264-bframes-midgop": None}


class SpecError(ValueError):
    """A --mount spec that cannot be served."""


@dataclass
class Mount:
    name: str
    kind: str
    path: Path | None = None
    fps: int = 15
    width: int = 640
    height: int = 360
    auth: tuple[str, str] | None = field(default=None, repr=False)
    skip: int = 20  # h264file-midgop: frames of the loop never sent


def parse_spec(spec: str) -> Mount:
    """Parse ``NAME=KIND[:PATH][,key=value...]`` into a :class:`Mount`."""
    name, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise SpecError("expected NAME=KIND[:PATH][,option=value...]")
    if not NAME_RE.match(name):
        raise SpecError(f"invalid mount name {name!r} (letters, digits, _ . - and inner /)")

    parts = rest.split(",")
    kind, _, path = parts[0].partition(":")
    m = Mount(name=name, kind=kind)
    for opt in parts[1:]:
        key, sep, value = opt.partition("=")
        if not sep or key not in OPTION_KEYS:
            raise SpecError(f"unknown option {opt!r} (known: {', '.join(OPTION_KEYS)})")
        if key == "fps":
            if not value.isdigit() or not 1 <= int(value) <= 120:
                raise SpecError(f"fps must be an integer 1..120, got {value!r}")
            m.fps = int(value)
        elif key == "size":
            sm = re.fullmatch(r"(\d+)x(\d+)", value)
            if not sm or int(sm[1]) < 16 or int(sm[2]) < 16 or int(sm[1]) % 2 or int(sm[2]) % 2:
                raise SpecError(f"size must be WxH with even sides >= 16, got {value!r}")
            m.width, m.height = int(sm[1]), int(sm[2])
        elif key == "auth":
            user, sep, password = value.partition(":")
            if not sep or not user or not password:
                raise SpecError("auth must be USER:PASS with both non-empty")
            m.auth = (user, password)
        elif key == "skip":
            if kind not in MIDGOP_KINDS or not value.isdigit():
                raise SpecError(f"skip=N (frames) applies to {', '.join(MIDGOP_KINDS)} only")
            m.skip = int(value)

    if kind in FILE_KINDS or MIDGOP_KINDS.get(kind) in FILE_KINDS:
        if not path:
            raise SpecError(f"{kind} needs a file: {name}={kind}:/path/to/file")
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0:
            raise SpecError(f"file not found or empty: {path}")
        if '"' in path:
            raise SpecError("file path must not contain a double quote")
        if any(o.startswith("size=") for o in parts[1:]):
            raise SpecError("size= applies to live mounts only (a file has its own size)")
        m.path = p.resolve()
    elif kind in LIVE_KINDS or kind in MIDGOP_KINDS:
        if path:
            raise SpecError(f"{kind} takes no file path")
    else:
        raise SpecError(
            f"unknown kind {kind!r} (known: {', '.join([*FILE_KINDS, *MIDGOP_KINDS, *LIVE_KINDS])})")
    return m


def launch_string(m: Mount) -> str:
    """gst-launch style pipeline for the mount (pay0 = video, pay1 = audio)."""
    if m.kind == "live-h264-bframes-midgop":
        # x264 with two B-frames between references (decode order differs from presentation
        # order, so the RTP timestamps, which are presentation times, are not monotonic)
        return (
            f"( videotestsrc is-live=true "
            f"! video/x-raw,width={m.width},height={m.height},framerate={m.fps}/1 "
            f"! x264enc name=enc speed-preset=ultrafast key-int-max={2 * m.fps} bframes=2 b-adapt=false "
            f"! video/x-h264,profile=main ! identity name=parse ! identity name=pace "
            f"! rtph264pay name=pay0 pt=96 )")
    if m.kind in FILE_KINDS or m.kind in MIDGOP_KINDS:
        media_type, parser, payloader = FILE_KINDS[MIDGOP_KINDS.get(m.kind, m.kind)]
        # multifilesrc treats location as a printf pattern (for %d), so escape '%'.
        location = str(m.path).replace("%", "%%")
        # No timestamps come from the file: the parser derives DTS from the
        # framerate in the caps, identity sync=true releases each frame at its
        # time (real-time pacing), and the probe added in media-configure
        # copies DTS into the missing PTS (see _on_media_configure).
        return (
            f'( multifilesrc location="{location}" loop=true '
            f'caps="{media_type},stream-format=byte-stream,framerate={m.fps}/1" '
            f"! {parser} name=parse ! identity name=pace sync=true "
            f"! {payloader} name=pay0 pt=96 )")

    # Live: x264 with a keyframe every 2 s.  Do NOT set rtph264pay
    # config-interval=-1 here: FFmpeg then splits each keyframe into two packets.
    video = (
        f"videotestsrc is-live=true "
        f"! video/x-raw,width={m.width},height={m.height},framerate={m.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={2 * m.fps} "
        f"! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96")
    audio = LIVE_KINDS[m.kind]
    return f"( {video} {audio} )" if audio else f"( {video} )"


def _pts_from_dts(_pad, info):
    """Pad probe: give every buffer a PTS (= DTS; valid because there are no B-frames).

    Looped raw streams carry no timestamps; the parser interpolates DTS but
    leaves PTS unset on non-keyframes, which makes RTP timestamps and
    client-side PTS wrong.
    """
    buf = info.get_buffer()
    if buf is not None and buf.pts == Gst.CLOCK_TIME_NONE and buf.dts != Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def _on_media_configure(_factory, media):
    parse = media.get_element().get_by_name("parse")
    parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _pts_from_dts)


def _on_midgop_configure(_factory, media, m: Mount):
    """Start `m.skip` frames into the stream; a file loop is re-timed so that frame goes out at PLAY.

    The frames are dropped after the parser (which has seen the parameter sets by then, and
    would otherwise drop P-frames that come before any), so the client gets P-frames it
    cannot decode until the next keyframe, like from a camera whose GOP runs on at PLAY.
    """
    state = {"base": None, "shift": None, "printed": False}

    def drop_and_shift(_pad, info):
        buf = info.get_buffer()
        if buf is None:
            return Gst.PadProbeReturn.OK
        if buf.pts == Gst.CLOCK_TIME_NONE and buf.dts != Gst.CLOCK_TIME_NONE:
            buf.pts = buf.dts
        # by time, not by count: a live pipeline starts over (same times) when the client plays
        if state["base"] is None:
            state["base"] = buf.pts
        if m.skip and buf.pts < state["base"] + (2 * m.skip - 1) * Gst.SECOND // (2 * m.fps):  # half a frame early
            return Gst.PadProbeReturn.DROP
        if state["shift"] is None and MIDGOP_KINDS[m.kind] is None:
            state["shift"] = 0  # a live source sends each frame when it is made anyway
        if state["shift"] is None:
            state["shift"] = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        if state["shift"]:
            if buf.dts != Gst.CLOCK_TIME_NONE:
                buf.dts -= state["shift"]
            if buf.pts != Gst.CLOCK_TIME_NONE:
                buf.pts -= state["shift"]
        return Gst.PadProbeReturn.OK

    def first_frame(_pad, info):
        if not state["printed"] and info.get_buffer() is not None:
            state["printed"] = True
            print(f"FIRST-FRAME {m.name} {time.time_ns() // 1000}", file=sys.stderr, flush=True)
        return Gst.PadProbeReturn.OK

    def no_keyframe_on_request(_pad, info):
        event = info.get_event()
        structure = event.get_structure() if event is not None else None
        if structure is not None and structure.get_name() == "GstForceKeyUnit":
            return Gst.PadProbeReturn.DROP  # the server asks for one when a client joins
        return Gst.PadProbeReturn.OK

    element = media.get_element()
    encoder = element.get_by_name("enc")
    if encoder is not None:
        encoder.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_UPSTREAM, no_keyframe_on_request)
    element.get_by_name("parse").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, drop_and_shift)
    element.get_by_name("pace").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, first_frame)


def _role(name: str, construct: bool) -> Gst.Structure:
    """A factory permission entry; add_role() itself isn't callable from Python."""
    c = "true" if construct else "false"
    return Gst.Structure.new_from_string(
        f"{name}, media.factory.access=(boolean)true, media.factory.construct=(boolean){c}")


def build_server(host: str, port: int, mounts: list[Mount], verbose: bool = False):
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))

    # One role per distinct credential pair.  Roles are only needed once an
    # RTSPAuth is installed, but then every factory needs them.
    creds = sorted({m.auth for m in mounts if m.auth})
    cred_role = {c: f"cred{i}" for i, c in enumerate(creds)}
    if creds:
        auth = GstRtspServer.RTSPAuth()
        for (user, password), role in cred_role.items():
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", role)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        # Requests without (valid) credentials get the anonymous role.
        anon = GstRtspServer.RTSPToken()
        anon.set_string("media.factory.role", "anonymous")
        auth.set_default_token(anon)
        server.set_auth(auth)

    mount_points = server.get_mount_points()
    for m in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_string(m))
        factory.set_shared(True)
        if m.kind in FILE_KINDS:
            factory.connect("media-configure", _on_media_configure)
        elif m.kind in MIDGOP_KINDS:
            factory.connect("media-configure", _on_midgop_configure, m)
        if creds:
            own = cred_role.get(m.auth) if m.auth else None
            for role in ["anonymous", *cred_role.values()]:
                # On a protected mount everyone else may "access" but not
                # "construct": that makes the server answer 401 (so FFmpeg
                # retries with the URL's credentials) instead of 404.
                construct = m.auth is None or role == own
                factory.add_role_from_structure(_role(role, construct))
        mount_points.add_factory("/" + m.name, factory)
        if verbose:
            print(f"testcam: /{m.name}: {launch_string(m)}", file=sys.stderr)

    if verbose:
        server.connect("client-connected", lambda _s, client: print(
            "testcam: client connected from "
            f"{client.get_connection().get_ip()}", file=sys.stderr, flush=True))
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Test RTSP camera server (see the module docstring for mount specs).")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, required=True, help="RTSP port (0 = pick a free one)")
    ap.add_argument("--mount", action="append", required=True, metavar="SPEC",
                    help="NAME=KIND[:PATH][,fps=N][,size=WxH][,auth=USER:PASS]; repeatable")
    ap.add_argument("-v", "--verbose", action="store_true", help="log pipelines and clients")
    args = ap.parse_args(argv)  # exits with status 2 on its own errors

    if not 0 <= args.port <= 65535:
        print(f"testcam: invalid port {args.port}", file=sys.stderr)
        return EXIT_USAGE
    mounts: list[Mount] = []
    for spec in args.mount:
        try:
            mounts.append(parse_spec(spec))
        except SpecError as exc:
            print(f"testcam: bad --mount {spec!r}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    names = [m.name for m in mounts]
    if len(set(names)) != len(names):
        print(f"testcam: duplicate mount names in {names}", file=sys.stderr)
        return EXIT_USAGE

    Gst.init(None)
    for element in ("multifilesrc", "x264enc", "avenc_aac", "opusenc", "mulawenc"):
        if Gst.ElementFactory.find(element) is None:
            print(f"testcam: warning: GStreamer element {element} missing", file=sys.stderr)

    server = build_server(args.host, args.port, mounts, args.verbose)
    # attach() returns 0 (and GStreamer logs a warning) when it cannot bind.
    if server.attach(None) == 0:
        print(f"testcam: cannot listen on {args.host}:{args.port} "
              "(address in use or not available)", file=sys.stderr)
        return EXIT_BIND

    loop = GLib.MainLoop()

    def _quit(signame: str) -> bool:
        if args.verbose:
            print(f"testcam: {signame}, stopping", file=sys.stderr)
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, _quit, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, _quit, "SIGINT")

    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"READY rtsp://{host}:{server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
