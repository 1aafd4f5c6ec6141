"""Runs the scripts in children forked from a process that imported TensorFlow.

Importing TensorFlow is most of what a short script run costs (1.7 s on the
2-core machines this was built on, over 4 s when they are slow), and the
suite runs the scripts some hundreds of times. `ForkServer` starts one
process per test process that imports TensorFlow and NumPy and nothing of
the suite's, then forks a child for each run: the child takes the run's
environment, working directory, arguments and output files, and executes
the script as `__main__`, as `python script.py` would, importing the
suite's modules afresh. Its exit status follows Python's rules: that of
`sys.exit`, 1 after an uncaught exception's traceback, death by SIGINT
after an uncaught KeyboardInterrupt.

Only runs whose environment differs from the server's in variables read
after start-up are forked (`FORKABLE_VARIABLES`); others, and every run when
CIFAR10_TESTS_FRESH_PROCESSES=1, start a fresh interpreter. Tests that
signal or watch a running script use cifar_testdata.start_script, which
always starts a fresh one.

Protocol: one JSON line per run on the server's stdin (the script's path and
arguments, environment, working directory, output files, timeout); one
JSON line back with the child's exit status, or null after the timeout.
"""

import atexit
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# Variables that the scripts (and TensorFlow) read only while they run, not
# at import, or not at all (pytest's PYTEST_CURRENT_TEST changes with every
# test): a run that sets others, such as TF_CPP_MIN_LOG_LEVEL or
# TF_ENABLE_ONEDNN_OPTS, needs a fresh interpreter.
FORKABLE_VARIABLES = ('TF_CONFIG', 'TMPDIR')
FORKABLE_PREFIXES = ('CIFAR10_', 'PYTEST_')


def forkable(env, server_env):
  """Whether a run with environment `env` may fork from a server started
  with `server_env`."""
  differing = {name for name in set(env) | set(server_env)
               if env.get(name) != server_env.get(name)}
  return all(name in FORKABLE_VARIABLES or name.startswith(FORKABLE_PREFIXES)
             for name in differing)


class ForkServer(object):
  """A client's end of one server process; `run` is thread-safe."""

  def __init__(self, env):
    self.env = dict(env)
    self._lock = threading.Lock()
    self._proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)], env=self.env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    atexit.register(self.close)

  def run(self, command, cwd, env, stdout_path, stderr_path, timeout):
    """Runs `command` ([python, script, args...]) in a forked child.

    Returns:
      The exit status as subprocess gives it (-N for death by signal N), or
      None if the child ran past `timeout` seconds and was killed.

    Raises:
      RuntimeError: if the server is gone.
    """
    request = {'argv': command[1:], 'cwd': cwd, 'env': env,
               'stdout': stdout_path, 'stderr': stderr_path,
               'timeout': timeout}
    with self._lock:
      self._proc.stdin.write(json.dumps(request) + '\n')
      self._proc.stdin.flush()
      reply = self._proc.stdout.readline()
    if not reply:
      raise RuntimeError('the fork server exited %s' % self._proc.poll())
    return json.loads(reply)['status']

  def close(self):
    if self._proc.poll() is None:
      self._proc.stdin.close()
      self._proc.wait()


def _child(request):
  """Becomes `python script args...` as the request describes; never
  returns."""
  status = 1
  try:
    os.environ.clear()
    os.environ.update(request['env'])
    tempfile.tempdir = None  # Read TMPDIR again.
    os.chdir(request['cwd'])
    for fd, path in ((1, request['stdout']), (2, request['stderr'])):
      out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
      os.dup2(out, fd)
      os.close(out)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    try:
      runpy.run_path(sys.argv[0], run_name='__main__')
      status = 0
    except SystemExit as e:
      if e.code is None:
        status = 0
      elif isinstance(e.code, int):
        status = e.code
      else:
        sys.stderr.write('%s\n' % e.code)
        status = 1
    except KeyboardInterrupt:
      traceback.print_exc()
      status = -signal.SIGINT
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      status = 1
    atexit._run_exitfuncs()  # pylint: disable=protected-access
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    if status < 0:
      # As Python does after an uncaught KeyboardInterrupt.
      signal.signal(-status, signal.SIG_DFL)
      os.kill(os.getpid(), -status)
    os._exit(status & 0xff)  # pylint: disable=protected-access


def _wait(pid, timeout):
  deadline = time.time() + timeout
  while True:
    done, wait_status = os.waitpid(pid, os.WNOHANG)
    if done:
      return os.waitstatus_to_exitcode(wait_status)
    if time.time() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return None
    time.sleep(0.005)


def serve():
  """Reads run requests on stdin until it closes."""
  import numpy  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow.compat.v1  # pylint: disable=g-import-not-at-top,unused-import
  replies = sys.stdout
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      _child(request)
    replies.write(json.dumps(
        {'status': _wait(pid, request['timeout'])}) + '\n')
    replies.flush()


if __name__ == '__main__':
  serve()
