"""Downloads, verifies and safely extracts the CIFAR-10 binary data set.

One call does it all and is cheap when the data are already there:

  batches_dir = maybe_download_and_extract(data_dir)

The steps, each of which can be resumed or repeated by running again:

  1. If `<data_dir>/cifar-10-batches-bin` holds the six `.bin` files with
     plausible sizes, return at once: no network, nothing written.
  2. Take an exclusive lock in `data_dir`, so that two scripts started at the
     same time download and extract once; the second finds the data ready.
  3. Use `<data_dir>/cifar-10-binary.tar.gz` if it is there (a manual
     download; one shorter than the official tarball, as the original
     tutorial left a download cut short, is resumed), otherwise download
     `data_url` (https://, http:// or file://) into
     `cifar-10-binary.tar.gz.part`, resuming a partial file with an HTTP
     Range request and retrying transient network errors with backoff (or
     as long as a server's Retry-After asks, up to 5 minutes).
  4. Check the SHA-256 (and, for the official tarball, the size first). A
     file that fails is renamed to `cifar-10-binary.tar.gz.bad-<sha prefix>`,
     never used and never deleted.
  5. Check every member of the archive before writing anything, write the
     regular files under `cifar-10-batches-bin/` into a temporary directory
     and rename it into place, so a reader never sees a half-written set.

Every failure a user can cause or fix is a `DownloadError` with a one-line
message that names the URL, file or values involved. Only this module's own
temporary files are ever removed; nothing outside `data_dir` is written.

Its own code uses only the standard library. The file layout and the check
of the extracted files come from `cifar10_input`, which imports TensorFlow.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import contextlib
import datetime
import email.utils
import errno
import fcntl
import hashlib
import http.client
import os
import shutil
import ssl
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import cifar10_input

DATA_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'
DATA_SHA256 = ('c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd')
DATA_BYTES = 170052171

# What to do with a tarball that matched its checksum but cannot be
# extracted: it is kept (it may be the user's), and would be used again.
MOVE_AWAY = 'move it away and rerun to download it again'

# Names inside data_dir. The tarball keeps the official name so that a manual
# download dropped into data_dir is found.
TARBALL_NAME = 'cifar-10-binary.tar.gz'
PART_SUFFIX = '.part'
BAD_SUFFIX = '.bad-'
LOCK_NAME = '.cifar10-download.lock'
# flock errors of file systems that have no locks (some network ones): there
# the scripts work unlocked, as the tutorial always did, with a warning.
NO_LOCKS_ERRNOS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
EXTRACT_PREFIX = '.extract-'

# Network behaviour. Attempts count consecutive failures that made no
# progress, so a flaky link that keeps delivering more bytes is not given up
# on. The base delay doubles after each failure; tests lower it, and the
# CIFAR10_DOWNLOAD_RETRY_SECONDS environment variable does the same for
# subprocesses.
MAX_ATTEMPTS = 5
try:
  RETRY_BASE_SECONDS = float(
      os.environ.get('CIFAR10_DOWNLOAD_RETRY_SECONDS', '1.0'))
except ValueError:
  RETRY_BASE_SECONDS = 1.0
# The longest wait a server's Retry-After (on 429, 503, ...) gets.
MAX_RETRY_AFTER_SECONDS = 300.0
TIMEOUT_SECONDS = 30.0
CHUNK_BYTES = 1 << 16
USER_AGENT = 'cifar10-tutorial-download/1.0'

# Progress: a redrawn bar on a terminal at most this often, and otherwise one
# plain line each time another PLAIN_STEP_PERCENT of the file has arrived.
TTY_REFRESH_SECONDS = 0.1
PLAIN_STEP_PERCENT = 10

_EXPECTED_BIN_FILES = cifar10_input.TRAIN_FILES + cifar10_input.EVAL_FILES
_HASH_BLOCK_BYTES = 1 << 20
_MB = 1e6


class DownloadError(ValueError):
  """A problem getting the data set, described in one line for the user."""

  def __init__(self, message):
    # Messages include exception texts and server reasons; collapsing the
    # whitespace keeps the promise of one line whatever they contain.
    super(DownloadError, self).__init__(' '.join(str(message).split()))


class _RetryableError(Exception):
  """A network failure that may go away if the request is repeated.

  Attributes:
    retry_after: seconds the server asked to wait before the next request
      (its Retry-After header), or 0.
  """

  def __init__(self, message, retry_after=0.0):
    super(_RetryableError, self).__init__(message)
    self.retry_after = retry_after


def _retry_after(value):
  """Seconds from a Retry-After header (seconds or an HTTP date), at most
  MAX_RETRY_AFTER_SECONDS; 0 if absent or unreadable."""
  value = (value or '').strip()
  if value.isdigit():
    seconds = float(value)
  else:
    try:
      seconds = (email.utils.parsedate_to_datetime(value) -
                 datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    except (TypeError, ValueError):
      return 0.0
  return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def maybe_download_and_extract(data_dir, data_url=DATA_URL,
                               sha256=DATA_SHA256):
  """Makes sure `<data_dir>/cifar-10-batches-bin` holds the data set.

  Args:
    data_dir: directory for the tarball and the extracted files; created if
      missing.
    data_url: https://, http:// or file:// URL of cifar-10-binary.tar.gz.
    sha256: hex SHA-256 the tarball must have (any letter case).

  Returns:
    The path of `<data_dir>/cifar-10-batches-bin`.

  Raises:
    DownloadError: with a one-line message naming the URL, file or values at
      fault, for every problem a user can cause or fix.
  """
  expected_sha = check_sha256(sha256)
  scheme = check_url(data_url)
  batches_dir = os.path.join(data_dir, cifar10_input.BATCHES_DIR)
  # Extraction renames a complete directory into place, so a directory that
  # is there but fails this check was not left by a running download: it is
  # reported rather than waited for or replaced.
  if _data_ready(batches_dir):
    return batches_dir

  _make_data_dir(data_dir)
  with _DirLock(data_dir) as lock:
    # Another process may have finished while this one waited for the lock.
    if _data_ready(batches_dir):
      return batches_dir
    if lock.held:
      _remove_killed_extractions(data_dir)
    tarball = _get_tarball(data_dir, data_url, scheme, expected_sha)
    _extract(tarball, data_dir, batches_dir)
  print('CIFAR-10 data ready in %s' % batches_dir)
  sys.stdout.flush()
  return batches_dir


def check_sha256(sha256):
  """The expected digest in lower case, or an error for a malformed value."""
  value = str(sha256 or '').strip().lower()
  if len(value) != 64 or any(c not in '0123456789abcdef' for c in value):
    raise DownloadError('expected SHA-256 %r is not 64 hexadecimal digits'
                        % (sha256,))
  return value


def check_url(data_url):
  """The URL's scheme ('https', 'http' or 'file'), or an error."""
  try:
    parts = urllib.parse.urlsplit(str(data_url))
    parts.port  # Parsed lazily; a bad port is a user error, not a retry.
  except ValueError as e:
    raise DownloadError('bad data URL %r (%s)' % (data_url, e))
  scheme = parts.scheme.lower()
  if scheme not in ('https', 'http', 'file'):
    raise DownloadError(
        'unsupported data URL %r: use an https://, http:// or file:// URL'
        % (data_url,))
  if scheme != 'file':
    if not parts.hostname:
      raise DownloadError('data URL %r names no host' % (data_url,))
    try:
      # What urlopen does to the host: an empty or overlong label (a typo
      # like 'www..cs.toronto.edu') fails here, not as a network error.
      parts.hostname.encode('idna')
    except UnicodeError as e:
      raise DownloadError('bad host in data URL %r (%s)' % (data_url, e))
  return scheme


def _data_ready(batches_dir):
  """Whether the extracted data set is complete.

  Returns:
    True if every `.bin` file is there with a whole, non-zero number of
    records; False if `batches_dir` does not exist.

  Raises:
    DownloadError: if `batches_dir` exists but is incomplete or damaged.
      It may hold the user's own files, so it is never deleted or replaced:
      the message says what to move away.
  """
  if not os.path.lexists(batches_dir):
    return False
  advice = ('move %s away (nothing is deleted automatically) and rerun to '
            'download and extract the data set again' % batches_dir)
  if not os.path.isdir(batches_dir):
    raise DownloadError('%s exists but is not a directory; %s'
                        % (batches_dir, advice))
  for name in _EXPECTED_BIN_FILES:
    problem = cifar10_input.bad_file(os.path.join(batches_dir, name))
    if problem:
      raise DownloadError('%s; %s' % (problem, advice))
  return True


@contextlib.contextmanager
def _os_errors(failure):
  """Turns an OSError in the block into a DownloadError: '<failure> (<why>)'.

  Local file errors (a full disk, a read-only directory) are not worth
  retrying like network errors, and deserve a one-line message.
  """
  try:
    yield
  except OSError as e:
    raise DownloadError('%s (%s)' % (failure, e.strerror or e))


def _make_data_dir(data_dir):
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DownloadError('data directory %s is a file, not a directory'
                        % data_dir)
  with _os_errors('cannot create data directory %s' % data_dir):
    os.makedirs(data_dir, exist_ok=True)


def lock(fd, path, busy, advice):
  """Takes an exclusive flock on the open file `fd`, named `path`.

  Where the file system has no locks (some network ones), warns and goes on
  unlocked, as the tutorial always did.

  Args:
    fd: an open descriptor of the lock file; closing it releases the lock.
    path: the lock file's name, for the warning.
    busy: called when another process holds the lock, which is then waited
      for, unless `busy` raises.
    advice: the end of the warning, what the user should not do then.

  Returns:
    Whether the lock is held.

  Raises:
    OSError: if the file cannot be locked for another reason.
  """
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    busy()
    fcntl.flock(fd, fcntl.LOCK_EX)
  except OSError as e:
    if e.errno not in NO_LOCKS_ERRNOS:
      raise
    print('Warning: cannot lock %s (%s); %s' % (path, e.strerror, advice),
          file=sys.stderr)
    return False
  return True


class _DirLock(object):
  """An exclusive flock on a file in data_dir, held while `with` runs.

  The lock file is left in place: removing it would let a third process lock
  a new file while the second still holds the old one.
  """

  def __init__(self, data_dir):
    self._data_dir = data_dir
    self._path = os.path.join(data_dir, LOCK_NAME)
    self._fd = None
    self.held = False

  def __enter__(self):
    try:
      self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
      raise DownloadError('cannot write to data directory %s (%s: %s)'
                          % (self._data_dir, self._path, e.strerror))

    def wait():
      print('Waiting for another process that is getting the data set into '
            '%s (lock %s)' % (self._data_dir, self._path))
      sys.stdout.flush()

    try:
      self.held = lock(self._fd, self._path, wait,
                       'do not start two downloads into %s at once'
                       % self._data_dir)
    except OSError as e:
      os.close(self._fd)
      raise DownloadError('cannot lock %s (%s)' % (self._path, e.strerror))
    return self

  def __exit__(self, *unused_exc_info):
    # Closing the descriptor releases the lock.
    os.close(self._fd)
    self._fd = None
    self.held = False
    return False


def _get_tarball(data_dir, data_url, scheme, expected_sha):
  """A verified tarball in data_dir, downloaded unless already there.

  Returns:
    The path of `<data_dir>/cifar-10-binary.tar.gz`.
  """
  tarball = os.path.join(data_dir, TARBALL_NAME)
  part = tarball + PART_SUFFIX
  size = _file_size(tarball) if os.path.isfile(tarball) else 0
  if (expected_sha == DATA_SHA256 and scheme != 'file' and
      0 < size < DATA_BYTES and not os.path.exists(part)):
    # The original tutorial kept a download cut short under the final name
    # and never fetched the rest: resumed as a partial download.
    print('%s in %s has %d of its %d bytes; resuming it'
          % (TARBALL_NAME, data_dir, size, DATA_BYTES))
    with _os_errors('cannot move %s to %s' % (tarball, part)):
      os.replace(tarball, part)
  if os.path.exists(tarball):
    print('Using %s, already in %s' % (TARBALL_NAME, data_dir))
    _verify(tarball, tarball, expected_sha, 'found in %s' % data_dir)
    return tarball

  if scheme == 'file':
    _copy_local(data_url, part, tarball)
  else:
    _download(data_url, part, tarball)
  _verify(part, tarball, expected_sha, 'downloaded from %s' % data_url)
  with _os_errors('cannot move %s to %s' % (part, tarball)):
    os.replace(part, tarball)
  return tarball


def _file_size(path):
  try:
    return os.stat(path).st_size
  except FileNotFoundError:
    return 0


def _open_for_write(path, mode):
  with _os_errors('cannot write %s' % path):
    return open(path, mode)


def _write(f, data, path):
  with _os_errors('cannot write %s' % path):
    f.write(data)


def _finish_file(f, path):
  """Flushes `f` to disk so a renamed file is complete even after a crash."""
  with _os_errors('cannot write %s' % path):
    f.flush()
    os.fsync(f.fileno())


def _copy_local(data_url, part, tarball):
  """Copies the file a file:// URL names to `part`."""
  parts = urllib.parse.urlsplit(data_url)
  if parts.netloc not in ('', 'localhost'):
    raise DownloadError('file URL %r names host %r: use file:///absolute/path'
                        % (data_url, parts.netloc))
  source = urllib.request.url2pathname(parts.path)
  try:
    src = open(source, 'rb')
  except OSError as e:
    raise DownloadError('cannot read %s (%s: %s); put a copy of %s at %s '
                        'instead' % (data_url, source, e.strerror,
                                     TARBALL_NAME, tarball))
  with src:
    total = os.fstat(src.fileno()).st_size
    progress = _Progress('Copying %s to %s' % (source, part))
    progress.start(0, total)

    def read(unused_done):
      with _os_errors('cannot read %s' % data_url):
        return src.read(CHUNK_BYTES)

    progress.finish(_write_chunks(read, part, 'wb', 0, progress))


def _download(url, part, tarball):
  """Downloads `url` into `part`, resuming and retrying as needed.

  Raises:
    DownloadError: for a permanent HTTP error, or when MAX_ATTEMPTS attempts
      in a row failed without getting any further.
  """
  progress = _Progress('Downloading %s to %s' % (url, part))
  try:
    _download_with_retries(url, part, tarball, progress)
  finally:
    # Stopped mid-bar (Ctrl-C, a full disk): the error goes on a line of
    # its own.
    progress.end_bar()


def _download_with_retries(url, part, tarball, progress):
  """`_download`'s attempts, reported on `progress`."""
  furthest = _file_size(part)
  failures = 0
  while True:
    try:
      _fetch_once(url, part, tarball, progress)
      return
    except _RetryableError as e:
      size = _file_size(part)
      if size > furthest:
        # Bytes arrived before the failure: the network works, so a drop
        # every so often should not exhaust the attempts.
        furthest = size
        failures = 0
      failures += 1
      if failures >= MAX_ATTEMPTS:
        raise DownloadError(
            'cannot download %s (%s; %d attempts failed); check the network '
            'and rerun, or download %s by other means and put it at %s'
            % (url, e, failures, TARBALL_NAME, tarball))
      # The server's Retry-After when it asks for longer.
      delay = max(RETRY_BASE_SECONDS * 2 ** (failures - 1), e.retry_after)
      progress.note('Attempt %d of %d failed (%s); retrying in %.1f s'
                    % (failures, MAX_ATTEMPTS, e, delay))
      time.sleep(delay)


def _content_range(value):
  """(first byte, total or None) from a Content-Range header, or None."""
  try:
    unit, spec = value.strip().split(None, 1)
    span, total = spec.split('/', 1)
    first = int(span.split('-', 1)[0])
    total = None if total.strip() == '*' else int(total)
  except (AttributeError, ValueError):
    return None
  if unit.lower() != 'bytes':
    return None
  return first, total


def _ascii_url(url):
  """`url` with the non-ASCII characters of its path, query and fragment
  percent-encoded (as UTF-8), as a browser sends them: urllib fails on them
  with an encoding error. Its host urllib encodes itself (IDNA)."""
  def encode(text):
    return ''.join(c if ord(c) < 128 else urllib.parse.quote(c)
                   for c in text)
  parts = urllib.parse.urlsplit(url)
  return urllib.parse.urlunsplit(parts._replace(
      path=encode(parts.path), query=encode(parts.query),
      fragment=encode(parts.fragment)))


def _fetch_once(url, part, tarball, progress):
  """One HTTP request: resumes `part` if it has bytes, else starts afresh.

  Raises:
    _RetryableError: for failures that another attempt may not have.
    DownloadError: for failures that it would have too.
  """
  offset = _file_size(part)
  request = urllib.request.Request(_ascii_url(url),
                                   headers={'User-Agent': USER_AGENT})
  if offset:
    request.add_header('Range', 'bytes=%d-' % offset)
  try:
    response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
  except urllib.error.HTTPError as e:
    e.close()
    if e.code == 416 and offset:
      # Nothing left past `offset`: the part is already whole (or too long,
      # which verification reports).
      return
    if e.code >= 500 or e.code in (408, 429):
      raise _RetryableError('HTTP %d %s' % (e.code, e.reason),
                            _retry_after(e.headers.get('Retry-After')))
    raise DownloadError('cannot download %s (HTTP %d %s); check the URL, or '
                        'download %s by other means and put it at %s'
                        % (url, e.code, e.reason, TARBALL_NAME, tarball))
  except http.client.InvalidURL as e:
    raise DownloadError('bad data URL %r (%s)' % (url, e))
  except urllib.error.URLError as e:
    if isinstance(e.reason, ssl.SSLCertVerificationError):
      raise DownloadError('cannot download %s (%s); download %s by other '
                          'means and put it at %s'
                          % (url, e.reason, TARBALL_NAME, tarball))
    raise _RetryableError(str(e.reason))
  except (http.client.HTTPException, OSError) as e:
    raise _RetryableError(str(e) or type(e).__name__)

  with response:
    status = response.getcode()
    length = response.headers.get('Content-Length')
    length = int(length) if length and length.strip().isdigit() else None
    if status == 206:
      span = _content_range(response.headers.get('Content-Range'))
      if span is None or span[0] != offset:
        # The body is some other part of the file; start again cleanly.
        _open_for_write(part, 'wb').close()
        raise _RetryableError('server sent bytes from %s, not from %d'
                              % (span and span[0], offset))
      mode = 'ab'
      if span[1] is not None:
        total = span[1]
      else:
        total = None if length is None else offset + length
    else:
      if offset:
        progress.note('%s ignored the request to resume at byte %d; '
                      'starting again from 0' % (url, offset))
        offset = 0
      mode = 'wb'
      total = length
    progress.start(offset, total)
    # read1 returns what has arrived rather than waiting for a full chunk,
    # so bytes received before a stall or a reset are kept for the resume.
    read1 = getattr(response, 'read1', response.read)

    def read(done):
      try:
        return read1(CHUNK_BYTES)
      except (http.client.HTTPException, OSError) as e:
        raise _RetryableError('connection lost after %d bytes (%s)'
                              % (done, str(e) or type(e).__name__))

    done = _write_chunks(read, part, mode, offset, progress)
    if total is not None and done < total:
      raise _RetryableError('connection closed after %d of %d bytes'
                            % (done, total))
    progress.finish(done)


def _write_chunks(read, part, mode, done, progress):
  """Writes the chunks `read(done)` returns to `part`, opened with `mode`.

  Args:
    read: returns the next chunk of bytes, empty at the end, given the count
      of bytes done so far (for its errors).
    part: the file to write.
    mode: 'wb', or 'ab' to append.
    done: bytes already in `part`.
    progress: a started _Progress.

  Returns:
    The bytes in `part` at the end.
  """
  with _open_for_write(part, mode) as f:
    while True:
      chunk = read(done)
      if not chunk:
        break
      _write(f, chunk, part)
      done += len(chunk)
      progress.update(done)
    _finish_file(f, part)
  return done


class _Progress(object):
  """Reports how a download goes on stdout.

  On a terminal a single line is redrawn with a bar, the percentage, the
  megabytes and the rate; elsewhere (logs, CI) a plain line is printed every
  PLAIN_STEP_PERCENT so the log stays short.
  """

  def __init__(self, title):
    self._out = sys.stdout
    self._tty = _isatty(self._out)
    self._title = title
    self._announced = False
    self._drawn = False
    self._last_draw = 0.0
    self._last_step = 0
    self._total = None
    self._start_bytes = 0
    self._start_time = time.time()

  def start(self, offset, total):
    """Called as each attempt starts, at byte `offset` of `total` (or None)."""
    self._announce()
    if offset:
      self._line('Resuming at %.1f MB' % (offset / _MB))
    self._total = total
    self._start_bytes = offset
    self._start_time = time.time()
    self._last_step = self._step(offset)

  def update(self, done):
    if self._tty:
      now = time.time()
      if now - self._last_draw >= TTY_REFRESH_SECONDS:
        self._draw(done)
        self._last_draw = now
    elif self._total:
      step = self._step(done)
      if step > self._last_step:
        self._last_step = step
        self._line('  %s' % self._status(done))

  def finish(self, done):
    if self._tty:
      self._draw(done)
      self.end_bar()
    elif not self._total or self._step(done) > self._last_step:
      self._line('  %s' % self._status(done))
    self._last_step = self._step(done)

  def note(self, message):
    self._announce()
    self._line(message)

  def _announce(self):
    if not self._announced:
      self._announced = True
      self._line(self._title)

  def _step(self, done):
    if not self._total:
      return 0
    percent = min(100, done * 100 // self._total)
    return percent // PLAIN_STEP_PERCENT * PLAIN_STEP_PERCENT

  def _status(self, done):
    elapsed = max(time.time() - self._start_time, 1e-6)
    rate = (done - self._start_bytes) / _MB / elapsed
    if self._total:
      return '%5.1f%%  %.1f of %.1f MB  %.1f MB/s' % (
          min(100.0, 100.0 * done / self._total), done / _MB,
          self._total / _MB, rate)
    return '%.1f MB  %.1f MB/s' % (done / _MB, rate)

  def _draw(self, done):
    width = 30
    if self._total:
      filled = min(width, width * done // self._total)
      bar = '[%s%s] ' % ('#' * filled, '.' * (width - filled))
    else:
      bar = ''
    self._out.write('\r  %s%s ' % (bar, self._status(done)))
    self._out.flush()
    self._drawn = True

  def end_bar(self):
    """Ends the bar's line, if one is drawn."""
    if self._drawn:
      self._out.write('\n')
      self._out.flush()
      self._drawn = False

  def _line(self, text):
    self.end_bar()
    self._out.write(text + '\n')
    self._out.flush()


def _isatty(stream):
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


def _sha256_of(path):
  digest = hashlib.sha256()
  with _os_errors('cannot read %s' % path), open(path, 'rb') as f:
    for block in iter(lambda: f.read(_HASH_BLOCK_BYTES), b''):
      digest.update(block)
  return digest.hexdigest()


def _set_aside(path, tarball, actual_sha):
  """Renames a file that failed verification; it is kept for inspection."""
  base = '%s%s%s' % (tarball, BAD_SUFFIX, actual_sha[:12])
  target = base
  count = 1
  # os.rename would silently replace an earlier bad file of the same name.
  while os.path.lexists(target):
    count += 1
    target = '%s-%d' % (base, count)
  with _os_errors('cannot rename bad file %s to %s' % (path, target)):
    os.rename(path, target)
  return target


def _verify(path, tarball, expected_sha, origin):
  """Checks `path` against the expected size and SHA-256.

  A file that fails is renamed by _set_aside before the error is raised, so
  the next run downloads again instead of failing the same way.

  Args:
    path: the file to check.
    tarball: the tarball's final path, which names the set-aside file.
    expected_sha: lower-case hex digest.
    origin: where the file came from, for the message.
  """
  print('Verifying %s' % path)
  sys.stdout.flush()
  with _os_errors('cannot read %s' % path):
    size = os.stat(path).st_size
  actual_sha = _sha256_of(path)
  if expected_sha == DATA_SHA256 and size != DATA_BYTES:
    # The size says more than a digest when a transfer was cut short.
    bad = _set_aside(path, tarball, actual_sha)
    raise DownloadError(
        'size mismatch for %s (%s): expected %d bytes, got %d; set aside as '
        '%s; rerun to download again' % (TARBALL_NAME, origin, DATA_BYTES,
                                          size, bad))
  if actual_sha != expected_sha:
    bad = _set_aside(path, tarball, actual_sha)
    raise DownloadError(
        'checksum mismatch for %s (%s): expected sha256 %s, got %s; set '
        'aside as %s; rerun to download again, or check the expected '
        'SHA-256' % (TARBALL_NAME, origin, expected_sha, actual_sha, bad))


# Archive members are read through these; anything they raise means the file
# is not a readable gzip-compressed tar archive.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _member_kind(member):
  """A description of a member type that is never extracted, or None."""
  if member.issym():
    return 'a symbolic link to %r' % member.linkname
  if member.islnk():
    return 'a hard link to %r' % member.linkname
  if member.ischr():
    return 'a character device'
  if member.isblk():
    return 'a block device'
  if member.isfifo():
    return 'a fifo'
  if not (member.isreg() or member.isdir()):
    return 'of unsupported type %r' % member.type
  return None


def _plan(members, tarball):
  """Checks every member and lists the files to write.

  Everything is checked before anything is written, so a refused archive
  leaves no trace.

  Returns:
    List of (member, path parts relative to cifar-10-batches-bin).

  Raises:
    DownloadError: naming the first member that is refused, or the first
      expected .bin file that is missing or has a bad size.
  """
  top = cifar10_input.BATCHES_DIR

  def refused(name, why):
    return DownloadError('refusing to extract %s: member %r %s; %s'
                         % (tarball, name, why, MOVE_AWAY))

  files = []
  for member in members:
    name = member.name
    if name.startswith('/') or os.path.isabs(name):
      raise refused(name, 'has an absolute path')
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if '..' in parts:
      raise refused(name, 'has a ".." component')
    kind = _member_kind(member)
    if kind:
      raise refused(name, 'is %s; only regular files are extracted' % kind)
    if member.isdir() and (not parts or parts == [top]):
      continue  # Directories are created here, not copied from the archive.
    if len(parts) < 2 or parts[0] != top:
      raise refused(name, 'is outside %s/' % top)
    if member.isdir():
      continue
    files.append((member, parts[1:]))

  sizes = {'/'.join(parts): member.size for member, parts in files}
  for name in _EXPECTED_BIN_FILES:
    if name not in sizes:
      raise DownloadError('%s does not hold the CIFAR-10 binary data set: '
                          '%s/%s is missing; %s'
                          % (tarball, top, name, MOVE_AWAY))
    problem = cifar10_input.bad_size('%s/%s in %s' % (top, name, tarball),
                                     sizes[name])
    if problem:
      raise DownloadError('%s; %s' % (problem, MOVE_AWAY))
  return files


def _remove_killed_extractions(data_dir):
  """Removes the temporary directories of extractions that were killed.

  `_extract` removes its own on any error, but not when the process is
  killed. Call only with the lock held: then no other extraction is running.
  """
  for name in os.listdir(data_dir):
    path = os.path.join(data_dir, name)
    if name.startswith(EXTRACT_PREFIX) and os.path.isdir(path):
      print('Removing %s, left by an extraction that was stopped' % path)
      shutil.rmtree(path, ignore_errors=True)


def _extract(tarball, data_dir, batches_dir):
  """Extracts the checked members of `tarball` into `batches_dir` at once.

  Files go to a new directory inside a temporary one in data_dir (same file
  system, so the final rename is atomic); the temporary directory is removed
  if anything fails.
  """
  print('Extracting %s' % tarball)
  sys.stdout.flush()

  def corrupt(error):
    return DownloadError('cannot read %s as a gzip-compressed tar archive '
                         '(%s); %s' % (tarball, error, MOVE_AWAY))

  try:
    tar = tarfile.open(tarball, 'r:gz')
  except _ARCHIVE_ERRORS as e:
    raise corrupt(e)
  with tar:
    try:
      # Reading every header also decompresses the whole stream, so most
      # corruption shows here, before anything is written.
      members = tar.getmembers()
    except _ARCHIVE_ERRORS as e:
      raise corrupt(e)
    files = _plan(members, tarball)

    with _os_errors('cannot write to data directory %s' % data_dir):
      temp_dir = tempfile.mkdtemp(dir=data_dir, prefix=EXTRACT_PREFIX)
    try:
      # mkdtemp's directory is private (0700); a plain mkdir inside it gets
      # the usual permissions for the directory that is kept.
      staged = os.path.join(temp_dir, cifar10_input.BATCHES_DIR)
      os.mkdir(staged)
      for member, parts in files:
        _extract_member(tar, member, staged, parts, corrupt)
      os.rename(staged, batches_dir)
    except OSError as e:
      raise DownloadError('cannot extract %s into %s (%s)'
                          % (tarball, data_dir, e))
    finally:
      shutil.rmtree(temp_dir, ignore_errors=True)


def _extract_member(tar, member, staged, parts, corrupt):
  target = os.path.join(staged, *parts)
  if len(parts) > 1:
    os.makedirs(os.path.dirname(target), exist_ok=True)
  try:
    src = tar.extractfile(member)
  except _ARCHIVE_ERRORS as e:
    raise corrupt(e)
  with src, _open_for_write(target, 'wb') as dst:
    while True:
      try:
        chunk = src.read(CHUNK_BYTES)
      except _ARCHIVE_ERRORS as e:
        raise corrupt(e)
      if not chunk:
        break
      _write(dst, chunk, target)
    _finish_file(dst, target)
