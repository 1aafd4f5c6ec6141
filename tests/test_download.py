"""Tests for cifar10_download: download, resume, verify, extract, lock.

No test touches the internet: a FileServer on 127.0.0.1 serves generated
tarballs in the CIFAR-10 layout and misbehaves on request.
"""

import datetime
import email.utils
import gzip
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

import cifar_testdata
import http_fixture

sys.path.insert(0, cifar_testdata.REPO)
import cifar10_download  # pylint: disable=g-import-not-at-top

DownloadError = cifar10_download.DownloadError

TARBALL = 'cifar-10-binary.tar.gz'
BATCHES = 'cifar-10-batches-bin'
BIN_FILES = ['data_batch_%d.bin' % i for i in range(1, 6)] + ['test_batch.bin']
PATH = '/' + TARBALL


def sha256(data):
  return hashlib.sha256(data).hexdigest()


def members_of(tarball):
  """{file name inside cifar-10-batches-bin: bytes} of a tar.gz."""
  out = {}
  with tarfile.open(fileobj=io.BytesIO(tarball), mode='r:gz') as tar:
    for member in tar.getmembers():
      if member.isreg():
        out[member.name.split('/', 1)[1]] = tar.extractfile(member).read()
  return out


def listing(root):
  """Every path under `root`, relative, for before/after comparisons."""
  found = set()
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      found.add(os.path.relpath(os.path.join(dirpath, name), root))
  return found


def assert_extracted(batches_dir, tarball):
  expected = members_of(tarball)
  assert sorted(os.listdir(batches_dir)) == sorted(expected)
  for name, data in expected.items():
    with open(os.path.join(batches_dir, name), 'rb') as f:
      assert f.read() == data, name


def assert_nothing_extracted(data_dir):
  assert not os.path.exists(os.path.join(data_dir, BATCHES))
  leftovers = [n for n in os.listdir(data_dir) if n.startswith('.extract-')]
  assert leftovers == []


@pytest.fixture(scope='module')
def tarball():
  return cifar_testdata.dataset_tarball()


@pytest.fixture(autouse=True)
def quick_network(monkeypatch):
  # Retries back off for milliseconds, and no test waits long on a socket.
  monkeypatch.setattr(cifar10_download, 'RETRY_BASE_SECONDS', 0.01)
  monkeypatch.setattr(cifar10_download, 'TIMEOUT_SECONDS', 5.0)


@pytest.fixture
def server(tarball):
  with http_fixture.FileServer({PATH: tarball}) as srv:
    yield srv


@pytest.fixture
def data_dir(tmp_path):
  return str(tmp_path / 'data')


def test_download_extracts_and_reports_progress(server, tarball, tmp_path,
                                                data_dir, capsys,
                                                monkeypatch):
  # Small chunks, so the tiny tarball crosses every 10% step.
  monkeypatch.setattr(cifar10_download, 'CHUNK_BYTES', 4096)
  # Upper case: the digest is compared without regard to case.
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball).upper())

  assert result == os.path.join(data_dir, BATCHES)
  assert_extracted(result, tarball)
  with open(os.path.join(data_dir, TARBALL), 'rb') as f:
    assert f.read() == tarball
  assert not os.path.exists(os.path.join(data_dir, TARBALL + '.part'))
  assert server.range_headers() == [None]
  # Only data_dir was written to.
  assert os.listdir(str(tmp_path)) == ['data']
  assert sorted(os.listdir(data_dir)) == sorted(
      ['.cifar10-download.lock', BATCHES, TARBALL])

  out = capsys.readouterr().out
  assert server.url() in out
  percents = [float(line.split('%')[0]) for line in out.splitlines()
              if line.startswith('  ') and '%' in line]
  # One plain line per 10% step (a chunk lands just past each step).
  assert [int(p) // 10 for p in percents] == list(range(1, 11)), out
  assert percents[-1] == 100.0
  assert 'MB/s' in out


class _Terminal(io.StringIO):
  """A terminal whose output a test reads: set as sys.stdout in the test
  itself, as pytest's capture replaces it after the fixtures."""

  def isatty(self):
    return True


def test_progress_bar_on_terminal(server, tarball, data_dir, monkeypatch):
  terminal = _Terminal()
  monkeypatch.setattr(sys, 'stdout', terminal)
  cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                              sha256(tarball))
  out = terminal.getvalue()
  assert '\r  [' + '#' * 30 + '] 100.0%' in out, out
  assert 'MB/s' in out


def test_error_mid_bar_gets_a_line_of_its_own(server, tarball, data_dir,
                                               monkeypatch):
  """Ctrl-C (or a full disk) during the download: the bar's line is ended,
  so the error the script prints next does not follow the bar."""
  terminal = _Terminal()
  monkeypatch.setattr(sys, 'stdout', terminal)
  monkeypatch.setattr(cifar10_download, 'TTY_REFRESH_SECONDS', 0)
  write = cifar10_download._write  # pylint: disable=protected-access
  chunks = []

  def interrupted_write(f, data, path):
    if chunks:
      raise KeyboardInterrupt
    chunks.append(data)
    write(f, data, path)

  monkeypatch.setattr(cifar10_download, '_write', interrupted_write)
  with pytest.raises(KeyboardInterrupt):
    cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                                sha256(tarball))
  out = terminal.getvalue()
  assert out.endswith('MB/s \n'), out
  assert out.split('\n')[-2].startswith('\r  ['), out


def test_resumes_dropped_connection_with_range(server, tarball, data_dir,
                                               capsys):
  cut = len(tarball) // 3
  server.add_fault(drop_after=cut)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))

  assert server.range_headers() == [None, 'bytes=%d-' % cut]
  assert_extracted(result, tarball)
  assert 'Resuming at' in capsys.readouterr().out


def test_url_with_non_ascii_characters(server, tarball, data_dir):
  """Sent percent-encoded, as a browser sends them; urllib alone failed
  with "'ascii' codec can't encode characters"."""
  server.files['/mirrors/g%C3%B6%C3%B6d/c.tar.gz?v=%C3%A9'] = tarball
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url('/mirrors/gööd/c.tar.gz?v=é'), sha256(tarball))
  assert_extracted(result, tarball)


def test_resumes_part_file_left_by_earlier_run(server, tarball, data_dir):
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL + '.part'), 'wb') as f:
    f.write(tarball[:1000])
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.range_headers() == ['bytes=1000-']
  assert_extracted(result, tarball)


def test_complete_part_file_is_verified_after_416(server, tarball, data_dir):
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL + '.part'), 'wb') as f:
    f.write(tarball)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.range_headers() == ['bytes=%d-' % len(tarball)]
  assert_extracted(result, tarball)


def test_restarts_when_server_ignores_range(server, tarball, data_dir,
                                            capsys):
  server.ignore_range = True
  server.add_fault(drop_after=len(tarball) // 2)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))

  # The resume was asked for, answered with the whole file, and the result
  # is still the exact tarball rather than a half appended to itself.
  assert server.range_headers() == [None, 'bytes=%d-' % (len(tarball) // 2)]
  assert 'starting again from 0' in capsys.readouterr().out
  with open(os.path.join(data_dir, TARBALL), 'rb') as f:
    assert f.read() == tarball
  assert_extracted(result, tarball)


def test_retries_server_errors(server, tarball, data_dir):
  server.add_fault(status=500)
  server.add_fault(status=503)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.gets() == 3
  assert_extracted(result, tarball)


def test_restarts_when_server_sends_another_range(server, tarball, data_dir):
  """A 206 answer that starts elsewhere than asked is not appended."""
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL + '.part'), 'wb') as f:
    f.write(tarball[:1000])
  server.add_fault(range_from_zero=True)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.range_headers() == ['bytes=1000-', None]
  with open(os.path.join(data_dir, TARBALL), 'rb') as f:
    assert f.read() == tarball
  assert_extracted(result, tarball)


@pytest.fixture
def sleeps(monkeypatch):
  """The retry delays the download waits, in order (without waiting)."""
  delays = []
  monkeypatch.setattr(cifar10_download.time, 'sleep', delays.append)
  return delays


def test_retry_delay_doubles_while_nothing_arrives(server, tarball, data_dir,
                                                   sleeps, capsys):
  for _ in range(3):
    server.add_fault(status=500)
  cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                              sha256(tarball))
  assert sleeps == [0.01, 0.02, 0.04]
  assert 'Attempt 3 of 5 failed (HTTP 500' in capsys.readouterr().out


def test_retry_waits_as_long_as_the_server_asks(server, tarball, data_dir,
                                                sleeps, monkeypatch):
  """Retry-After, in seconds or as a date, when longer than the backoff;
  at most MAX_RETRY_AFTER_SECONDS; unreadable, ignored."""
  monkeypatch.setattr(cifar10_download, 'MAX_ATTEMPTS', 6)
  server.add_fault(status=503, retry_after='7')
  server.add_fault(status=429, retry_after='100000')
  server.add_fault(status=503, retry_after='soon')
  server.add_fault(status=503, retry_after='0')
  server.add_fault(status=503, retry_after=email.utils.format_datetime(
      datetime.datetime.now(datetime.timezone.utc) +
      datetime.timedelta(seconds=60), usegmt=True))
  cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                              sha256(tarball))
  assert sleeps[:4] == [7.0, 300.0, 0.04, 0.08]
  assert 55 < sleeps[4] <= 60
  assert server.gets() == 6


def test_attempts_start_over_after_progress(server, tarball, data_dir,
                                            sleeps, monkeypatch):
  """More drops than MAX_ATTEMPTS, each after more bytes: not given up on,
  and no longer waits."""
  monkeypatch.setattr(cifar10_download, 'MAX_ATTEMPTS', 2)
  for _ in range(4):
    server.add_fault(drop_after=100)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.range_headers() == [None] + [
      'bytes=%d-' % (100 * i) for i in range(1, 5)]
  assert sleeps == [0.01] * 4
  assert_extracted(result, tarball)


def test_resumes_after_timeout(server, tarball, data_dir, monkeypatch,
                               capsys):
  # Long enough that a busy machine's pauses in the sending do not time out
  # too, at another byte; the stall (in a thread nobody waits for) longer.
  monkeypatch.setattr(cifar10_download, 'TIMEOUT_SECONDS', 1.5)
  server.add_fault(stall_after=5000, stall_seconds=10.0)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.range_headers() == [None, 'bytes=5000-']
  assert ('Attempt 1 of 5 failed (connection lost after 5000 bytes (timed '
          'out)); retrying' in capsys.readouterr().out)
  assert_extracted(result, tarball)


def test_gives_up_after_repeated_server_errors(server, tarball, data_dir,
                                               monkeypatch):
  monkeypatch.setattr(cifar10_download, 'MAX_ATTEMPTS', 3)
  for _ in range(3):
    server.add_fault(status=500)
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                                sha256(tarball))
  message = str(info.value)
  assert server.gets() == 3
  assert server.url() in message and 'HTTP 500' in message
  assert os.path.join(data_dir, TARBALL) in message
  assert_nothing_extracted(data_dir)


def test_missing_file_on_server_is_not_retried(server, tarball, data_dir):
  url = server.url('/no-such-file.tar.gz')
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, url,
                                                sha256(tarball))
  assert url in str(info.value) and 'HTTP 404' in str(info.value)
  assert server.gets() == 1


def test_wrong_checksum_sets_file_aside(server, tarball, data_dir):
  wrong = sha256(b'something else')
  actual = sha256(tarball)
  for attempt in range(3):
    with pytest.raises(DownloadError) as info:
      cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                                  wrong)
    message = str(info.value)
    assert wrong in message and actual in message
    assert '\n' not in message
    assert server.gets() == attempt + 1

  # Every download is kept, under a name of its own; none was used.
  bad = sorted(n for n in os.listdir(data_dir) if '.bad-' in n)
  assert bad == [TARBALL + '.bad-' + actual[:12],
                 TARBALL + '.bad-' + actual[:12] + '-2',
                 TARBALL + '.bad-' + actual[:12] + '-3']
  assert os.path.join(data_dir, bad[2]) in message
  for name in bad:
    with open(os.path.join(data_dir, name), 'rb') as f:
      assert f.read() == tarball
  assert not os.path.exists(os.path.join(data_dir, TARBALL))
  assert not os.path.exists(os.path.join(data_dir, TARBALL + '.part'))
  assert_nothing_extracted(data_dir)


def test_official_checksum_checks_size_first(server, tarball, data_dir):
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, server.url())
  message = str(info.value)
  assert '170052171' in message and str(len(tarball)) in message
  assert [n for n in os.listdir(data_dir) if '.bad-' in n] == [
      TARBALL + '.bad-' + sha256(tarball)[:12]]
  assert_nothing_extracted(data_dir)


def test_tarball_already_present_is_used_without_request(server, tarball,
                                                         data_dir, capsys):
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL), 'wb') as f:
    f.write(tarball)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.gets() == 0
  assert_extracted(result, tarball)
  assert 'Using ' + TARBALL in capsys.readouterr().out


def test_bad_tarball_already_present_is_set_aside(server, tarball, data_dir):
  os.makedirs(data_dir)
  damaged = tarball[:-10]
  with open(os.path.join(data_dir, TARBALL), 'wb') as f:
    f.write(damaged)
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                                sha256(tarball))
  assert sha256(damaged) in str(info.value)
  assert server.gets() == 0
  assert not os.path.exists(os.path.join(data_dir, TARBALL))
  with open(os.path.join(data_dir, TARBALL + '.bad-' + sha256(damaged)[:12]),
            'rb') as f:
    assert f.read() == damaged
  assert_nothing_extracted(data_dir)


def test_official_tarball_cut_short_is_resumed(server, tarball, data_dir,
                                               monkeypatch, capsys):
  """As the original tutorial left a download cut short: under the final
  name. The official tarball's size shows it, and the rest is fetched."""
  monkeypatch.setattr(cifar10_download, 'DATA_SHA256', sha256(tarball))
  monkeypatch.setattr(cifar10_download, 'DATA_BYTES', len(tarball))
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL), 'wb') as f:
    f.write(tarball[:1000])
  result = cifar10_download.maybe_download_and_extract(
      data_dir, server.url(), sha256(tarball))
  assert server.range_headers() == ['bytes=1000-']
  assert_extracted(result, tarball)
  assert ('%s in %s has 1000 of its %d bytes; resuming it'
          % (TARBALL, data_dir, len(tarball))) in capsys.readouterr().out


def test_extracted_data_needs_no_request_and_no_writes(tmp_path, data_dir):
  batches_dir = os.path.join(data_dir, BATCHES)
  cifar_testdata.write_dataset(batches_dir, train_per_file=2, test_records=2)
  before = {p: os.stat(os.path.join(str(tmp_path), p)).st_mtime_ns
            for p in listing(str(tmp_path))}
  # Nothing listens at this URL, so any network access would fail.
  result = cifar10_download.maybe_download_and_extract(
      data_dir, http_fixture.closed_port_url())
  assert result == batches_dir
  after = {p: os.stat(os.path.join(str(tmp_path), p)).st_mtime_ns
           for p in listing(str(tmp_path))}
  assert after == before


@pytest.mark.parametrize('damage', ['truncate', 'remove'])
def test_damaged_extracted_data_is_reported_not_deleted(server, tarball,
                                                        data_dir, damage):
  batches_dir = os.path.join(data_dir, BATCHES)
  cifar_testdata.write_dataset(batches_dir, train_per_file=2, test_records=2)
  victim = os.path.join(batches_dir, 'data_batch_3.bin')
  if damage == 'truncate':
    with open(victim, 'r+b') as f:
      f.truncate(100)
  else:
    os.remove(victim)
  kept = listing(data_dir)

  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                                sha256(tarball))
  message = str(info.value)
  assert victim in message and 'move ' + batches_dir in message
  assert server.gets() == 0
  assert listing(data_dir) == kept
  if damage == 'truncate':
    assert os.path.getsize(victim) == 100


def _tar_gz(entries):
  """tar.gz bytes; entries are TarInfo setups (name, type, linkname, data)."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    for name, kind, linkname, data in entries:
      info = tarfile.TarInfo(name)
      info.type = kind
      info.linkname = linkname
      info.size = len(data) if kind == tarfile.REGTYPE else 0
      tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
  return buf.getvalue()


def _malicious(tmp_path, case):
  """A tarball with the whole valid data set plus one hostile member.

  Returns:
    (tar.gz bytes, the hostile member's name, paths it must not create).
  """
  outside = str(tmp_path / 'outside')
  good = [(BATCHES + '/' + n, tarfile.REGTYPE, '', d)
          for n, d in members_of(cifar_testdata.dataset_tarball(2, 2)).items()]
  payload = b'owned\n'
  if case == 'absolute':
    bad = [(outside + '/abs.txt', tarfile.REGTYPE, '', payload)]
    target = [outside + '/abs.txt']
  elif case == 'dotdot':
    bad = [('../outside/dotdot.txt', tarfile.REGTYPE, '', payload)]
    target = [outside + '/dotdot.txt']
  elif case == 'nested_dotdot':
    bad = [(BATCHES + '/../../outside/nested.txt', tarfile.REGTYPE, '',
            payload)]
    target = [outside + '/nested.txt']
  elif case == 'symlink':
    # The classic two-step escape: a link to a directory outside, then a
    # file written through it.
    bad = [(BATCHES + '/escape', tarfile.SYMTYPE, outside, b''),
           (BATCHES + '/escape/via_link.txt', tarfile.REGTYPE, '', payload)]
    target = [outside + '/via_link.txt']
  elif case == 'relative_symlink':
    # The same through a relative link: data/cifar-10-batches-bin/../..
    bad = [(BATCHES + '/escape', tarfile.SYMTYPE, '../../outside', b''),
           (BATCHES + '/escape/via_link.txt', tarfile.REGTYPE, '', payload)]
    target = [outside + '/via_link.txt']
  elif case == 'hardlink':
    bad = [(BATCHES + '/linked', tarfile.LNKTYPE, outside + '/victim', b'')]
    target = []
  elif case == 'device':
    bad = [(BATCHES + '/null', tarfile.CHRTYPE, '', b'')]
    target = []
  elif case == 'fifo':
    bad = [(BATCHES + '/pipe', tarfile.FIFOTYPE, '', b'')]
    target = []
  elif case == 'outside_top':
    bad = [('evil.sh', tarfile.REGTYPE, '', payload)]
    target = []
  elif case == 'other_dir':
    # Inside the data directory, but it would replace a data file there.
    bad = [('other/data_batch_1.bin', tarfile.REGTYPE, '', payload)]
    target = []
  else:
    raise AssertionError(case)
  # The hostile member sits among good ones, after some have been seen.
  return _tar_gz(good[:3] + bad + good[3:]), bad[0][0], target


@pytest.mark.parametrize('case, reason', [
    ('absolute', 'has an absolute path'),
    ('dotdot', 'has a ".." component'),
    ('nested_dotdot', 'has a ".." component'),
    ('symlink', 'is a symbolic link to'),
    ('relative_symlink', 'is a symbolic link to'),
    ('hardlink', 'is a hard link to'),
    ('device', 'is a character device'),
    ('fifo', 'is a fifo'),
    ('outside_top', 'is outside cifar-10-batches-bin/'),
    ('other_dir', 'is outside cifar-10-batches-bin/'),
])
def test_malicious_archive_is_refused(tmp_path, data_dir, case, reason):
  os.makedirs(str(tmp_path / 'outside'))
  with open(str(tmp_path / 'outside' / 'victim'), 'wb') as f:
    f.write(b'precious')
  data, member, targets = _malicious(tmp_path, case)
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL), 'wb') as f:
    f.write(data)
  before = listing(str(tmp_path))

  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(
        data_dir, http_fixture.closed_port_url(), sha256(data))
  message = str(info.value)
  assert repr(member) in message and 'refusing' in message
  assert message.endswith('; ' + cifar10_download.MOVE_AWAY)
  # Each check refuses its own case (another would, after it).
  assert reason in message, message
  assert '\n' not in message
  for target in targets:
    assert not os.path.lexists(target)
  assert_nothing_extracted(data_dir)
  # Only the lock file is new; the tarball itself is left where it was.
  assert listing(str(tmp_path)) == before | {'data/.cifar10-download.lock'}
  with open(str(tmp_path / 'outside' / 'victim'), 'rb') as f:
    assert f.read() == b'precious'


def _place_and_extract(data_dir, data):
  os.makedirs(data_dir)
  path = os.path.join(data_dir, TARBALL)
  with open(path, 'wb') as f:
    f.write(data)
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(
        data_dir, http_fixture.closed_port_url(), sha256(data))
  assert_nothing_extracted(data_dir)
  # A file that matched its checksum is the user's to keep, and the
  # message says to move it away (a rerun would use it again).
  with open(path, 'rb') as f:
    assert f.read() == data
  assert str(info.value).endswith('; ' + cifar10_download.MOVE_AWAY)
  return path, str(info.value)


@pytest.mark.parametrize('corruption', ['truncated', 'flipped', 'not_gzip'])
def test_corrupt_gzip_is_reported(tarball, data_dir, corruption):
  if corruption == 'truncated':
    data = tarball[:len(tarball) // 2]
  elif corruption == 'flipped':
    middle = len(tarball) // 2
    flipped = bytes(b ^ 0xff for b in tarball[middle:middle + 64])
    data = tarball[:middle] + flipped + tarball[middle + 64:]
  else:
    data = b'<html>Not Found</html>' * 50
  path, message = _place_and_extract(data_dir, data)
  assert path in message and 'gzip' in message


def test_payload_that_is_not_tar_is_reported(data_dir):
  path, message = _place_and_extract(
      data_dir, gzip.compress(b'this is not a tar archive\n' * 200))
  assert path in message and 'tar archive' in message


def test_archive_without_the_data_set_is_reported(data_dir):
  members = [(BATCHES + '/data_batch_1.bin', b'\0' * 3073)]
  path, message = _place_and_extract(
      data_dir, cifar_testdata.tarball_bytes(members))
  assert path in message and 'data_batch_2.bin is missing' in message


def test_archive_with_bad_record_size_is_reported(data_dir):
  members = [(BATCHES + '/' + n, b'\0' * 3073) for n in BIN_FILES]
  members[2] = (BATCHES + '/data_batch_3.bin', b'\0' * 3000)
  path, message = _place_and_extract(
      data_dir, cifar_testdata.tarball_bytes(members))
  assert path in message and 'data_batch_3.bin' in message
  assert '3000 bytes' in message


def test_offline_gives_one_line_with_url_and_manual_path(data_dir,
                                                         monkeypatch):
  monkeypatch.setattr(cifar10_download, 'MAX_ATTEMPTS', 3)
  url = http_fixture.closed_port_url()
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, url)
  message = str(info.value)
  assert '\n' not in message
  assert url in message and 'refused' in message.lower()
  assert os.path.join(data_dir, TARBALL) in message
  assert '3 attempts' in message
  assert_nothing_extracted(data_dir)


def test_dns_failure_is_retried_then_reported(data_dir, monkeypatch):
  calls = []

  def no_dns(*args, **kwargs):
    calls.append(args[0])
    raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')

  monkeypatch.setattr(socket, 'getaddrinfo', no_dns)
  monkeypatch.setattr(cifar10_download, 'MAX_ATTEMPTS', 2)
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir)
  message = str(info.value)
  assert calls == ['www.cs.toronto.edu'] * 2
  assert cifar10_download.DATA_URL in message
  assert os.path.join(data_dir, TARBALL) in message


def test_extraction_killed_midway_is_cleaned_up_by_next_run(tarball,
                                                           data_dir):
  os.makedirs(data_dir)
  with open(os.path.join(data_dir, TARBALL), 'wb') as f:
    f.write(tarball)
  url = 'http://127.0.0.1:9/' + TARBALL  # Never asked: the tarball is here.
  # A process killed after extracting one file, as by SIGKILL or the OOM
  # killer: no cleanup of its own runs.
  killed = subprocess.run([sys.executable, '-c', textwrap.dedent("""
      import os, signal, sys
      sys.path.insert(0, %r)
      import cifar10_download
      extract_member = cifar10_download._extract_member
      def extract_one_then_die(*args):
        extract_member(*args)
        os.kill(os.getpid(), signal.SIGKILL)
      cifar10_download._extract_member = extract_one_then_die
      cifar10_download.maybe_download_and_extract(%r, %r, %r)
      """ % (cifar_testdata.REPO, data_dir, url, sha256(tarball)))],
                          capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert [n for n in os.listdir(data_dir) if n.startswith('.extract-')]

  result = cifar10_download.maybe_download_and_extract(
      data_dir, url, sha256(tarball))
  assert_extracted(result, tarball)
  assert_nothing_extracted_temp(data_dir)


def test_file_url_is_copied_and_verified(tarball, tmp_path, data_dir):
  mirror = tmp_path / 'mirror dir' / 'copy.tar.gz'
  mirror.parent.mkdir()
  mirror.write_bytes(tarball)
  result = cifar10_download.maybe_download_and_extract(
      data_dir, mirror.as_uri(), sha256(tarball))
  assert_extracted(result, tarball)
  assert mirror.read_bytes() == tarball

  other = str(tmp_path / 'other')
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(
        other, mirror.as_uri(), sha256(b'x'))
  assert sha256(tarball) in str(info.value)
  assert not os.path.exists(os.path.join(other, TARBALL))


def test_missing_file_url_is_reported(tmp_path, data_dir):
  url = (tmp_path / 'nowhere.tar.gz').as_uri()
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, url)
  assert url in str(info.value)


@pytest.mark.parametrize('url', ['ftp://example.com/cifar.tar.gz',
                                 '/home/me/cifar-10-binary.tar.gz',
                                 'http:///no-host.tar.gz',
                                 'https://www..cs.toronto.edu/c.tar.gz',
                                 'https://%s.example.com/c.tar.gz' % ('x' * 64)])
def test_unsupported_url_is_rejected_before_any_write(data_dir, url):
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, url)
  assert repr(url) in str(info.value)
  assert not os.path.exists(data_dir)


def test_malformed_checksum_is_rejected(data_dir):
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, sha256='abc123')
  assert "'abc123'" in str(info.value)
  assert not os.path.exists(data_dir)


def test_data_dir_that_cannot_be_created(tmp_path, tarball, server):
  blocker = tmp_path / 'a-file'
  blocker.write_bytes(b'')
  data_dir = str(blocker / 'data')
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(data_dir, server.url(),
                                                sha256(tarball))
  assert data_dir in str(info.value)
  assert server.gets() == 0
  # The data directory itself a file: said so, and the file is left alone.
  with pytest.raises(DownloadError) as info:
    cifar10_download.maybe_download_and_extract(str(blocker), server.url(),
                                                sha256(tarball))
  assert str(info.value) == (
      'data directory %s is a file, not a directory' % blocker)
  assert blocker.read_bytes() == b''


def test_error_is_a_value_error():
  assert issubclass(DownloadError, ValueError)
  assert str(DownloadError('one\ntwo  three')) == 'one two three'


_RACER = textwrap.dedent('''
    import os, sys, time
    import cifar10_download
    ready, go, data_dir, url, digest = sys.argv[1:]
    open(ready, 'w').close()
    while not os.path.exists(go):
      time.sleep(0.005)
    print('RESULT ' + cifar10_download.maybe_download_and_extract(
        data_dir, url, digest))
''')


def test_two_processes_download_and_extract_once(server, tarball, tmp_path,
                                                 data_dir):
  # The slow answer keeps the first process inside its lock while the
  # second one arrives; without the lock both would download.
  server.delay = 1.0
  env = cifar_testdata.script_env()
  env['CIFAR10_DOWNLOAD_RETRY_SECONDS'] = '0.01'
  go = str(tmp_path / 'go')
  procs = []
  for i in range(2):
    ready = str(tmp_path / ('ready%d' % i))
    procs.append((ready, subprocess.Popen(
        [sys.executable, '-c', _RACER, ready, go, data_dir, server.url(),
         sha256(tarball)],
        cwd=cifar_testdata.REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)))
  deadline = time.time() + 60
  while not all(os.path.exists(r) for r, _ in procs):
    assert time.time() < deadline, 'racers did not start'
    assert all(p.poll() is None for _, p in procs), [
        p.communicate() for _, p in procs]
    time.sleep(0.01)
  open(go, 'w').close()

  outputs = []
  for _, proc in procs:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    outputs.append(out)
  batches_dir = os.path.join(data_dir, BATCHES)
  for out in outputs:
    assert 'RESULT ' + batches_dir in out
  assert server.gets() == 1
  assert sum('Extracting' in out for out in outputs) == 1
  assert sum('Waiting for another process' in out for out in outputs) == 1
  assert_extracted(batches_dir, tarball)
  assert_nothing_extracted_temp(data_dir)


def assert_nothing_extracted_temp(data_dir):
  assert [n for n in os.listdir(data_dir)
          if n.startswith('.extract-') or n.endswith('.part')] == []


@pytest.mark.parametrize('errno_value', cifar10_download.NO_LOCKS_ERRNOS)
def test_a_file_system_without_locks_works_unlocked(tmp_path, monkeypatch,
                                                    capsys, errno_value):
  """Some network file systems refuse flock: the download and the trainer
  go on without a lock, as the tutorial always did, and say so."""
  def no_flock(unused_fd, unused_operation):
    raise OSError(errno_value, os.strerror(errno_value))

  monkeypatch.setattr(cifar10_download.fcntl, 'flock', no_flock)
  path = str(tmp_path / 'lock')
  fd = os.open(path, os.O_RDWR | os.O_CREAT)
  try:
    assert not cifar10_download.lock(fd, path, None, 'do not do that')
  finally:
    os.close(fd)
  assert capsys.readouterr().err == (
      'Warning: cannot lock %s (%s); do not do that\n'
      % (path, os.strerror(errno_value)))


def test_a_lock_error_other_than_no_locks_is_raised(tmp_path, monkeypatch):
  def broken_flock(unused_fd, unused_operation):
    raise OSError(5, 'Input/output error')

  monkeypatch.setattr(cifar10_download.fcntl, 'flock', broken_flock)
  with pytest.raises(cifar10_download.DownloadError,
                     match=r'^cannot lock .*\.cifar10-download\.lock '
                     r'\(Input/output error\)$'):
    with cifar10_download._DirLock(str(tmp_path)):  # pylint: disable=protected-access
      pass
