"""A local HTTP server for download tests, with Range support and faults.

The server listens on 127.0.0.1 on a free port, in a background thread, and
serves byte strings from a dict keyed by URL path:

  with FileServer({'/cifar-10-binary.tar.gz': data}) as server:
    url = server.url('/cifar-10-binary.tar.gz')
    server.add_fault(drop_after=1000)   # the next GET is cut short
    ...
    assert server.range_headers() == [None, 'bytes=1000-']

Faults are queued and each one is used up by one GET, so a test states
exactly which request misbehaves. Every request is recorded for assertions.
"""

import collections
import http.server
import socket
import threading
import time

_SEND_CHUNK = 16 * 1024

Request = collections.namedtuple('Request', 'method path range')


class FileServer(object):
  """Serves `files` over HTTP/1.0 with optional faults.

  Attributes:
    files: dict URL path -> bytes; may be changed while the server runs.
    ignore_range: if True, Range headers are ignored and the whole file is
      sent with status 200, as some servers and proxies do.
    delay: seconds to wait before answering each GET.
    requests: list of Request, one per request received, in order.
  """

  def __init__(self, files=None):
    self.files = dict(files or {})
    self.ignore_range = False
    self.delay = 0.0
    self.requests = []
    self._faults = collections.deque()
    self._lock = threading.Lock()
    self._httpd = None
    self._thread = None

  def add_fault(self, status=None, drop_after=None, stall_after=None,
                stall_seconds=2.0, range_from_zero=False, retry_after=None):
    """Queues a misbehaviour for the next GET not yet given one.

    Args:
      status: answer with this HTTP status (e.g. 500) and no file.
      drop_after: send the headers of the full answer but only this many
        bytes of the body, then close the connection.
      stall_after: send this many body bytes, then go silent for
        `stall_seconds` before closing, to provoke a client timeout.
      stall_seconds: see stall_after.
      range_from_zero: answer a Range request with status 206 but the file
        from its first byte, and a Content-Range that says so.
      retry_after: with status, the value of a Retry-After header.
    """
    self._faults.append(dict(status=status, drop_after=drop_after,
                             stall_after=stall_after,
                             stall_seconds=stall_seconds,
                             range_from_zero=range_from_zero,
                             retry_after=retry_after))

  @property
  def port(self):
    return self._httpd.server_address[1]

  def url(self, path='/cifar-10-binary.tar.gz'):
    return 'http://127.0.0.1:%d%s' % (self.port, path)

  def gets(self):
    """The number of GET requests received so far."""
    with self._lock:
      return sum(1 for r in self.requests if r.method == 'GET')

  def range_headers(self):
    """The Range header of each GET, or None where there was none."""
    with self._lock:
      return [r.range for r in self.requests if r.method == 'GET']

  def start(self):
    handler = type('Handler', (_Handler,), {'fixture': self})
    self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    # A stalled handler must not keep the test waiting when it stops.
    self._httpd.daemon_threads = True
    self._httpd.block_on_close = False
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    kwargs={'poll_interval': 0.05},
                                    daemon=True)
    self._thread.start()
    return self

  def stop(self):
    if self._httpd is not None:
      self._httpd.shutdown()
      self._httpd.server_close()
      self._thread.join(timeout=5)
      self._httpd = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *unused_exc_info):
    self.stop()
    return False

  def _record(self, handler):
    """Logs a request; returns the fault it should suffer, if any."""
    with self._lock:
      self.requests.append(Request(handler.command, handler.path,
                                   handler.headers.get('Range')))
      if handler.command == 'GET' and self._faults:
        return self._faults.popleft()
      return None


def closed_port_url(path='/cifar-10-binary.tar.gz'):
  """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.bind(('127.0.0.1', 0))
  port = sock.getsockname()[1]
  # Closed without listen(): connecting now is refused, and the port is very
  # unlikely to be reused by the time the test connects.
  sock.close()
  return 'http://127.0.0.1:%d%s' % (port, path)


def _parse_range(value, size):
  """(first, last) byte of a 'bytes=N-' or 'bytes=N-M' header, else None."""
  if not value or not value.startswith('bytes='):
    return None
  spec = value[len('bytes='):].split(',')[0].strip()
  first, _, last = spec.partition('-')
  if not first.isdigit():
    return None
  last = int(last) if last.isdigit() else size - 1
  return int(first), min(last, size - 1)


class _Handler(http.server.BaseHTTPRequestHandler):
  """Answers GET and HEAD from the owning FileServer (`fixture`)."""

  fixture = None

  def log_message(self, *unused_args):
    pass  # Keeps test output readable.

  def do_HEAD(self):
    self._answer(send_body=False)

  def do_GET(self):
    self._answer(send_body=True)

  def _answer(self, send_body):
    fixture = self.fixture
    fault = fixture._record(self) or {}
    if send_body and fixture.delay:
      time.sleep(fixture.delay)
    if fault.get('retry_after') is not None:
      self.send_response(fault['status'])
      self.send_header('Retry-After', fault['retry_after'])
      self.send_header('Content-Length', '0')
      self.end_headers()
      return
    if fault.get('status'):
      self.send_error(fault['status'])
      return
    data = fixture.files.get(self.path)
    if data is None:
      self.send_error(404)
      return

    span = None
    if not fixture.ignore_range:
      span = _parse_range(self.headers.get('Range'), len(data))
    if span and span[0] >= len(data):
      self.send_response(416)
      self.send_header('Content-Range', 'bytes */%d' % len(data))
      self.send_header('Content-Length', '0')
      self.end_headers()
      return
    if span and fault.get('range_from_zero'):
      span = (0, span[1])
    if span:
      first, last = span
      body = data[first:last + 1]
      self.send_response(206)
      self.send_header('Content-Range',
                       'bytes %d-%d/%d' % (first, last, len(data)))
    else:
      body = data
      self.send_response(200)
    self.send_header('Content-Type', 'application/gzip')
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Accept-Ranges', 'bytes')
    self.end_headers()
    if not send_body:
      return

    cut = fault.get('drop_after')
    if cut is None:
      cut = fault.get('stall_after')
    self._send(body if cut is None else body[:cut])
    if fault.get('stall_after') is not None:
      time.sleep(fault['stall_seconds'])
    if cut is not None:
      # Ends the connection with the body incomplete, as a dropped link does.
      self.close_connection = True
      try:
        self.connection.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass

  def _send(self, body):
    try:
      for i in range(0, len(body), _SEND_CHUNK):
        self.wfile.write(body[i:i + _SEND_CHUNK])
      self.wfile.flush()
    except OSError:
      pass  # The client went away (e.g. timed out); nothing to report.
