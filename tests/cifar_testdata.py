"""Small data sets in the exact CIFAR-10 binary format, and script runners.

The real data set cannot be downloaded in CI, so tests write their own files:
records of one label byte and 3,072 image bytes (red, green, blue planes of
32x32), named like the official ones.
"""

import io
import locale
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

import script_forks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHES_DIR = 'cifar-10-batches-bin'
TRAIN_FILES = ['data_batch_%d.bin' % i for i in range(1, 6)]
CLASS_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck']


def pattern_images(labels, rng, noise=40):
  """Images whose class is easy to learn, through crops, flips and contrast.

  Class c lights up colour channel c % 3 with a pattern chosen by c // 3:
  flat, horizontal stripes, vertical stripes or a checkerboard.

  Returns:
    uint8 [n, 32, 32, 3], height-width-channel.
  """
  n = len(labels)
  yy, xx = np.mgrid[0:32, 0:32]
  patterns = [np.ones((32, 32)), (yy // 2) % 2, (xx // 2) % 2,
              ((yy // 2) + (xx // 2)) % 2]
  images = rng.uniform(0, noise, size=(n, 32, 32, 3))
  for i, label in enumerate(labels):
    images[i, :, :, label % 3] += 200 * patterns[label // 3]
  return np.clip(images, 0, 255).astype(np.uint8)


def encode_records(labels, images):
  """CIFAR-10 binary records for uint8 HWC `images` and their `labels`."""
  planes = np.transpose(np.asarray(images, np.uint8), (0, 3, 1, 2))
  rows = np.concatenate(
      [np.asarray(labels, np.uint8)[:, None], planes.reshape(len(labels), -1)],
      axis=1)
  return rows.tobytes()


def write_dataset(batches_dir, train_per_file=64, test_records=300, seed=0,
                  learnable=True):
  """Writes the five training files, the test file and the class names.

  Returns:
    dict file name -> (labels, uint8 HWC images) of what was written.
  """
  rng = np.random.RandomState(seed)
  os.makedirs(batches_dir, exist_ok=True)
  written = {}
  for name, count in [(n, train_per_file) for n in TRAIN_FILES] + [
      ('test_batch.bin', test_records)]:
    labels = rng.randint(0, 10, size=count)
    if learnable:
      images = pattern_images(labels, rng)
    else:
      images = rng.randint(0, 256, size=(count, 32, 32, 3)).astype(np.uint8)
    with open(os.path.join(batches_dir, name), 'wb') as f:
      f.write(encode_records(labels, images))
    written[name] = (labels, images)
  with open(os.path.join(batches_dir, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(CLASS_NAMES) + '\n\n')
  return written


def tarball_bytes(members):
  """A .tar.gz holding `members`, a list of (name, bytes or tarinfo setup)."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def dataset_tarball(train_per_file=16, test_records=40, seed=0):
  """The bytes of a cifar-10-binary.tar.gz with a small data set."""
  rng = np.random.RandomState(seed)
  members = []
  for name, count in [(n, train_per_file) for n in TRAIN_FILES] + [
      ('test_batch.bin', test_records)]:
    labels = rng.randint(0, 10, size=count)
    members.append((BATCHES_DIR + '/' + name,
                    encode_records(labels, pattern_images(labels, rng))))
  members.append((BATCHES_DIR + '/batches.meta.txt',
                  ('\n'.join(CLASS_NAMES) + '\n').encode()))
  return tarball_bytes(members)


def script_env(**extra):
  env = dict(os.environ)
  # A cluster in the caller's environment would make every training run a
  # task of it; tests that want one pass it in `extra`.
  env.pop('TF_CONFIG', None)
  env.update(extra)
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  env['CUDA_VISIBLE_DEVICES'] = ''
  env['PYTHONUNBUFFERED'] = '1'
  return env


def script_command(script, *args):
  return [sys.executable, os.path.join(REPO, script)] + [str(a) for a in args]


_servers = []


def _fork_server():
  """This test process's script_forks.ForkServer, started on first use;
  None under CIFAR10_TESTS_FRESH_PROCESSES=1."""
  if os.environ.get('CIFAR10_TESTS_FRESH_PROCESSES') == '1':
    return None
  if not _servers:
    _servers.append(script_forks.ForkServer(script_env()))
  return _servers[0]


def _read_text(path):
  # As subprocess's text mode reads a pipe.
  with open(path, encoding=locale.getpreferredencoding(False),
            newline=None) as f:
    return f.read()


def run_script(script, *args, timeout=240, check=None, env=None):
  """Runs one of the suite's scripts to the end.

  In a child of script_forks.ForkServer, which has imported TensorFlow
  already, where the run's environment allows it; otherwise in a fresh
  interpreter.

  Args:
    script: file name such as 'cifar10_train.py'.
    *args: command-line arguments.
    timeout: seconds before the test fails.
    check: if not None, the expected exit code; a different one fails the
      test with the script's output.
    env: extra environment variables.

  Returns:
    subprocess.CompletedProcess with text stdout and stderr.
  """
  command = script_command(script, *args)
  env = script_env(**(env or {}))
  server = _fork_server()
  if server and script_forks.forkable(env, server.env):
    with tempfile.TemporaryDirectory() as outputs:
      paths = [os.path.join(outputs, name) for name in ('stdout', 'stderr')]
      status = server.run(command, REPO, env, *paths, timeout=timeout)
      if status is None:
        raise subprocess.TimeoutExpired(command, timeout)
      stdout, stderr = (_read_text(path) for path in paths)
    proc = subprocess.CompletedProcess(command, status, stdout, stderr)
  else:
    proc = subprocess.run(command, cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
  if check is not None and proc.returncode != check:
    raise AssertionError('%s exited %d, expected %d\nstdout:\n%s\nstderr:\n%s'
                         % (script, proc.returncode, check, proc.stdout,
                            proc.stderr))
  return proc


def start_script(script, *args, env=None, **popen_kwargs):
  """Starts a script in the background; the caller stops it.

  Args:
    script: file name such as 'cifar10_train.py'.
    *args: command-line arguments.
    env: extra environment variables.
    **popen_kwargs: for subprocess.Popen, e.g. stdout.
  """
  return subprocess.Popen(script_command(script, *args), cwd=REPO,
                          env=script_env(**(env or {})), text=True,
                          **popen_kwargs)
