"""The fork server runs a script as a fresh interpreter would."""

import subprocess
import textwrap

import pytest

import cifar_testdata
import script_forks

_PROBE = textwrap.dedent("""\
    import os, sys, tempfile
    print(sys.argv[1:], os.getcwd(), tempfile.gettempdir(),
          os.environ.get('CIFAR10_PROBE'), __name__, sys.path[0],
          os.read(0, 10))
    sys.stderr.write('to stderr\\n')
    how = sys.argv[1]
    if how == 'exit':
      sys.exit(int(sys.argv[2]))
    if how == 'message':
      sys.exit('a message')
    if how == 'error':
      raise ValueError('bad')
    if how == 'interrupt':
      raise KeyboardInterrupt
    if how == 'atexit':
      import atexit
      atexit.register(lambda: print('at exit'))
    """)


def _both(monkeypatch, script, *args, env=None):
  """(forked, fresh) results of run_script."""
  results = []
  for fresh in ('0', '1'):
    monkeypatch.setenv('CIFAR10_TESTS_FRESH_PROCESSES', fresh)
    results.append(cifar_testdata.run_script(script, *args, env=env))
  return results


@pytest.mark.parametrize('args,status', [
    (['exit', '0'], 0), (['exit', '3'], 3), (['message'], 1), (['error'], 1),
    (['interrupt'], -2), (['atexit'], 0)])
def test_forked_run_is_like_a_fresh_one(monkeypatch, tmp_path, args, status):
  script = tmp_path / 'probe.py'
  script.write_text(_PROBE)
  forked, fresh = _both(monkeypatch, str(script), *args,
                        env={'CIFAR10_PROBE': 'set', 'TMPDIR': str(tmp_path)})
  assert forked.returncode == fresh.returncode == status
  assert forked.stdout == fresh.stdout
  assert str(tmp_path) in forked.stdout and ' set __main__ ' in forked.stdout
  # Tracebacks differ in runpy's frames: compare the last line.
  assert (forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1])


def test_forked_script_reports_like_a_fresh_one(monkeypatch, tmp_path):
  forked, fresh = _both(monkeypatch, 'cifar10_train.py', '--batch_size=0',
                        '--train_dir=%s' % tmp_path)
  assert forked.returncode == fresh.returncode == 2
  assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]


def test_timeout(monkeypatch, tmp_path):
  monkeypatch.setenv('CIFAR10_TESTS_FRESH_PROCESSES', '0')
  script = tmp_path / 'sleep.py'
  script.write_text('import time\ntime.sleep(30)\n')
  with pytest.raises(subprocess.TimeoutExpired):
    cifar_testdata.run_script(str(script), timeout=0.5)


def test_forkable():
  server = {'TF_CPP_MIN_LOG_LEVEL': '2', 'HOME': '/root'}
  assert script_forks.forkable(dict(server, TF_CONFIG='{}', TMPDIR='/t',
                                    CIFAR10_X='1', PYTEST_CURRENT_TEST='t'),
                               server)
  assert not script_forks.forkable(dict(server, TF_CPP_MIN_LOG_LEVEL='0'),
                                   server)
  assert not script_forks.forkable(dict(server, TF_ENABLE_ONEDNN_OPTS='0'),
                                   server)
  assert not script_forks.forkable({'HOME': '/root'}, server)
