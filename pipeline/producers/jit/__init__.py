"""The JIT worker: just-in-time decoding of a session's files to WebRTC viewers, frame-accurate.

Modules (pure ones first; they import no asyncio, NATS or PyAV):

- :mod:`.timecode`: frame numbers to SMPTE timecodes (drop-frame at 29.97 and 59.94), from a
  file's start time code.
- :mod:`.playback`: the playback state machine (position, play/pause, rate, seeks; which frame
  is due when).
- :mod:`.rtpclock`: the session's 90 kHz video clock, the stamp a frame report names and the
  page maps RTP timestamps to frames with.
- :mod:`.channels`: audio channel layout and routing to the stereo output.
- :mod:`.picture`: output size and colour decisions; :mod:`.tonemap`: the BT.2100 to SDR
  operator (numpy); :mod:`.sdp`: offer directions and viewer ids from SDP.
- :mod:`.compare`: an A/B compare's frame lock, layout and composition (numpy).
- :mod:`.errors`: the package's error tree (documented there).
- :mod:`.inputs`: where an input may come from (media roots, http(s) under the source policy,
  S3 through presigned URLs) and opening it with FFmpeg's allow-lists.
- :mod:`.sourcetc`: the start time code a file records (MOV ``tmcd``, MXF).
- :mod:`.decoder`: the frame-accurate video reader; :mod:`.convert`: frames to BT.709
  yuv420p pictures; :mod:`.audio`: audio inputs read at a sample position, and mixing.
- :mod:`.abreader`: an A/B compare's two videos read frame-locked and composed.
- :mod:`.proxyplan`: what the seek proxy builds next and drops (pure); :mod:`.proxy`: the seek
  proxy itself (intra-only JPEG on disk: its store, builder and reader).
- :mod:`.threads`: the media threads that own PyAV objects.
- :mod:`.tracks`: the aiortc tracks a viewer receives; :mod:`.peers`: a viewer's peer
  connection; :mod:`.player`: the session clock feeding every viewer.
- :mod:`.worker`: :class:`~.worker.JitWorker`, the service.

This package's ``__init__`` imports nothing, so that the gateway can use :mod:`.sdp` without
loading aiortc or PyAV.
"""
