"""Off-screen rendering: Debian's VTK 9.3 has only the X11 (GLX) render window, no EGL or
OSMesa, so without a display a private Xvfb server is started for the life of the process."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys

# --------------------------------------------------------------------------- off-screen


_XVFB: subprocess.Popen | None = None


def _render_window_class() -> str:
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL factory)
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    return vtkRenderWindow().GetClassName()


def ensure_offscreen() -> None:
    """Make off-screen rendering possible in this process.

    Nothing to do on macOS/Windows, with a ``DISPLAY``, or with a VTK built for EGL or
    OSMesa. Otherwise start ``Xvfb`` on a free display (``-displayfd``), set ``DISPLAY``
    and stop the server at exit. Raises RuntimeError (instead of letting VTK abort the
    process) when no route exists.
    """
    global _XVFB
    import pyvista as pv

    pv.OFF_SCREEN = True
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or _XVFB is not None:
        return
    cls = _render_window_class()
    if cls in ("vtkEGLRenderWindow", "vtkOSMesaRenderWindow"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError(
            "off-screen rendering needs an X display: this VTK has only "
            f"{cls}; install Xvfb (Debian package 'xvfb') or a VTK built with EGL/OSMesa"
        )
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [xvfb, "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(w,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    finally:
        os.close(w)
    number = b""
    with os.fdopen(r, "rb") as pipe:
        while not number.endswith(b"\n"):
            chunk = pipe.read(1)
            if not chunk:
                break
            number += chunk
    if not number.strip().isdigit():
        proc.kill()
        raise RuntimeError("could not start Xvfb for off-screen rendering")
    _XVFB = proc
    os.environ["DISPLAY"] = f":{number.decode().strip()}"
    atexit.register(_stop_xvfb)


def _die_with_parent() -> None:
    """In the Xvfb child: get SIGTERM when this process dies, even if killed (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stop_xvfb() -> None:
    global _XVFB
    if _XVFB is not None:
        _XVFB.terminate()
        try:
            _XVFB.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _XVFB.kill()
        _XVFB = None
