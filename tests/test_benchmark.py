"""The benchmark is a tool, not a test: this only checks that it works."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import tensorflow.compat.v1 as tf

from cifar_testdata import run_script, start_script


def test_benchmark_smoke_mode_reports_every_figure(tmp_path):
  out = tmp_path / 'figures.json'
  proc = run_script('cifar10_benchmark.py', '--smoke', '--json=%s' % out,
                    check=0)
  figures = json.loads(out.read_text())
  for name in ('train_fp32', 'multi_gpu_1_tower_fp32',
               'train_mixed_precision'):
    assert figures[name]['median'] > 0 and figures[name]['samples'] >= 2
    assert 0 < figures[name]['first_step_s'] < 120
    assert figures[name]['peak_rss_mb'] > 100
  assert figures['flops_per_training_example'] == 105295104
  # One round: one matmul measurement, as for the evaluation below.
  assert figures['matmul_gflops'] > 0
  assert figures['matmul_runs_gflops'] == [figures['matmul_gflops']]
  assert figures['ratio_to_matmul'] == (
      figures['train_fp32']['median'] * 105295104 /
      (figures['matmul_gflops'] * 1e9))
  assert figures['pipeline_images_per_sec'] > 0
  assert figures['eval_images'] == 256
  # Smoke mode runs one round: one evaluator, with one checkpoint after its
  # first, each rate its own median.
  for name in ('first', 'later'):
    rate = figures['eval_%s_images_per_sec' % name]
    assert rate > 0
    assert figures['eval_%s_runs_images_per_sec' % name] == [rate]
    # Within the whole evaluation's time, 256 images at this rate (both
    # rounded in the log: 1 ms of slack).
    assert 0 < figures['eval_%s_first_batch_ms' % name] <= 1000 * 256 / rate + 1
  assert 'evaluation, each later checkpoint' in proc.stdout
  assert 'ratio of float32 training to matmul rate' in proc.stdout


def test_benchmark_profile_mode_times_the_training_step_ops(tmp_path):
  out = tmp_path / 'profile.json'
  proc = run_script('cifar10_benchmark.py', '--smoke', '--profile',
                    '--json=%s' % out, check=0)
  profile = json.loads(out.read_text())
  assert profile['step_ms'] > 0 and profile['mixed_precision'] is False
  by_type = profile['ms_by_op_type']
  assert any('Conv2DBackpropFilter' in t for t in by_type), by_type
  assert all(ms >= 0 for ms in by_type.values())
  assert any(name.endswith('conv2/conv2') for name in profile['ms_by_op'])
  assert 'slowest by op type' in proc.stdout


def test_bad_json_path_fails_before_measuring(tmp_path):
  target = tmp_path / 'missing' / 'figures.json'
  proc = run_script('cifar10_benchmark.py', '--smoke', '--json=%s' % target)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_benchmark.py: error: --json=%s has no directory %s'
      % (target, target.parent))
  assert proc.stdout == ''  # Nothing measured.
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('flag', ['--data_dir=/data/cifar10', '--max_steps=5',
                                  '--worker_hosts=w0:2222', '--use_fp16'])
def test_trainers_flags_it_does_not_use_are_refused(tmp_path, flag):
  proc = run_script('cifar10_benchmark.py', '--smoke', '--batch_size=16',
                    flag, env={'TMPDIR': str(tmp_path)})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_benchmark.py: error: %s is not a flag of the benchmark%s (see '
      '--helpfull)' % (flag.split('=')[0], (
          ' without --profile: it measures both precisions'
          if flag == '--use_fp16' else
          ', which writes its own data and directories')))
  assert list(tmp_path.iterdir()) == []  # No data written.


@pytest.mark.parametrize('args,message', [
    (['--smoke', '--steps=5'], '--steps is not used with --smoke'),
    (['--smoke', '--warmup=5'], '--warmup is not used with --smoke'),
    (['--smoke', '--rounds=2'], '--rounds is not used with --smoke'),
    (['--profile', '--later_checkpoints=2'],
     '--later_checkpoints is not used with --profile')])
def test_its_own_flags_a_mode_does_not_use_are_refused(tmp_path, args,
                                                       message):
  proc = run_script('cifar10_benchmark.py', *args,
                    env={'TMPDIR': str(tmp_path)})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_benchmark.py: error: ' + message)
  assert list(tmp_path.iterdir()) == []  # No data written.


def test_help_lists_the_trainers_flags_it_takes():
  """--batch_size and --use_fp16 come from cifar10.py but are the
  benchmark's flags too: --help lists them with its own, and no other."""
  proc = run_script('cifar10_benchmark.py', '--help')
  listed = re.findall(r'^  --(?:\[no\])?(\w+):', proc.stdout, re.M)
  assert sorted(listed) == ['batch_size', 'json', 'later_checkpoints',
                            'profile', 'rounds', 'smoke', 'steps',
                            'use_fp16', 'warmup']


def test_steps_and_warmup_fit_the_trainers_max_steps(tmp_path):
  proc = run_script('cifar10_benchmark.py', '--steps=2147483647',
                    env={'TMPDIR': str(tmp_path)})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_benchmark.py: error: flags steps=2147483647, warmup=10: '
      '--warmup + --steps must be at most 2147483647 (see --helpfull)')
  assert list(tmp_path.iterdir()) == []  # No data written.


def test_a_failed_or_killed_run_is_a_one_line_error():
  import cifar10_benchmark  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'^-c .* exited 3: gone$'):
    cifar10_benchmark.run_script(
        ['-c', 'import sys; print("gone", file=sys.stderr); sys.exit(3)'])
  with pytest.raises(ValueError, match=r'was killed by SIGSEGV \(out of '
                     r'memory\?\)$'):
    cifar10_benchmark.run_script(
        ['-c', 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'])


def _save_step_5(train_dir):
  """A checkpoint of a global step alone, at step 5, in `train_dir`."""
  with tf.Graph().as_default():
    step = tf.train.get_or_create_global_step()
    with tf.Session() as sess:
      sess.run(step.initializer)
      sess.run(step.assign(5))
      tf.train.Saver().save(sess, str(train_dir / 'model.ckpt'), global_step=5)


def test_a_failed_evaluator_is_a_one_line_error(tmp_path):
  import cifar10_benchmark  # pylint: disable=g-import-not-at-top
  train_dir = tmp_path / 'train'
  _save_step_5(train_dir)
  missing = tmp_path / 'no_data'
  with pytest.raises(ValueError, match=r'^cifar10_eval\.py --data_dir=%s .* '
                     r'exited 1: cifar10_eval\.py: error: .*%s' % (
                         missing, missing)):
    cifar10_benchmark.evaluate_watching(str(missing), str(train_dir),
                                        str(tmp_path), 100, 1)
  # The evaluator watched copies of the checkpoint, not train_dir.
  assert sorted(p.name for p in (tmp_path / 'eval_checkpoints').iterdir()) == [
      'model.ckpt-5.data-00000-of-00001', 'model.ckpt-5.index',
      'model.ckpt-5.meta']


@pytest.fixture
def benchmark_signals(monkeypatch):
  """SIGINT's and SIGTERM's handlers as the benchmark's main sets them
  (SIGTERM's default would end pytest), put back after the test.

  Returns:
    {signal: its handler}.
  """
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cifar10_cli, '_terminated', [])
  saved = {signum: signal.getsignal(signum)
           for signum in (signal.SIGINT, signal.SIGTERM)}
  put_back = signal.signal  # Not a stand-in that a test patched in.
  cifar10_cli.exit_on_sigterm()
  yield {signum: signal.getsignal(signum) for signum in saved}
  for signum, handler in saved.items():
    put_back(signum, handler)


@pytest.mark.parametrize('signum,raised', [
    (signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_a_signal_while_the_evaluator_starts_stops_it(
    tmp_path, monkeypatch, benchmark_signals, signum, raised):  # pylint: disable=unused-argument
  """A signal that comes as subprocess.Popen returns, the evaluator started:
  held back and delivered where the benchmark stops the evaluator, not
  raised out of Popen with the evaluator left running (a full run of the
  suite once left one)."""
  import cifar10_benchmark  # pylint: disable=g-import-not-at-top
  train_dir = tmp_path / 'train'
  _save_step_5(train_dir)
  started = []
  start = subprocess.Popen

  def start_then_signalled(unused_args, **kwargs):
    started.append(start(['sleep', '60'], **kwargs))  # The evaluator.
    os.kill(os.getpid(), signum)
    return started[-1]
  monkeypatch.setattr(cifar10_benchmark.subprocess, 'Popen',
                      start_then_signalled)
  try:
    with pytest.raises(raised):
      cifar10_benchmark.evaluate_watching(str(tmp_path / 'data'),
                                          str(train_dir), str(tmp_path), 100,
                                          1)
    assert started[0].poll() == -signal.SIGTERM  # Stopped, and waited for.
  finally:
    for proc in started:
      proc.kill()
      proc.wait()


def test_a_signal_while_the_handlers_are_put_back_leaves_none_held(
    monkeypatch, benchmark_signals):
  """A signal as soon as the first handler is back: it stops the benchmark,
  and the other handler is put back all the same, not left holding its
  signal for good."""
  import cifar10_benchmark  # pylint: disable=g-import-not-at-top
  swap = signal.signal
  signalled = []

  def swap_then_signalled(signum, handler):
    previous = swap(signum, handler)
    if handler is benchmark_signals[signum] and not signalled:
      signalled.append(signum)
      os.kill(os.getpid(), signum)
    return previous
  monkeypatch.setattr(signal, 'signal', swap_then_signalled)
  with pytest.raises((KeyboardInterrupt, SystemExit)):
    with cifar10_benchmark._signals_held():  # pylint: disable=protected-access
      pass
  assert {signum: signal.getsignal(signum)
          for signum in benchmark_signals} == benchmark_signals


def _children(pid):
  """The command lines of the running child processes of `pid`."""
  try:
    with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
      children = [int(child) for child in f.read().split()]
  except OSError:
    return {}
  lines = {}
  for child in children:
    try:
      with open('/proc/%d/cmdline' % child) as f:
        lines[child] = f.read().replace('\0', ' ')
    except OSError:
      pass
  return lines


def _signal_its_evaluator_running(tmp_path, signum):
  """Runs `cifar10_benchmark.py --smoke` and sends it `signum` as soon as
  its evaluator runs.

  Returns:
    (subprocess.CompletedProcess, pids of the evaluators seen).
  """
  proc = start_script('cifar10_benchmark.py', '--smoke',
                      env={'TMPDIR': str(tmp_path)},
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 180
    evaluators = {}
    while not evaluators and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
      evaluators = {pid: line for pid, line in _children(proc.pid).items()
                    if 'cifar10_eval.py' in line}
    assert evaluators, 'no evaluator seen'
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
  finally:
    proc.kill()
  return (subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                      stderr), list(evaluators))


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_watching_evaluator_and_removes_the_data(
    tmp_path, signum):
  """SIGTERM, or SIGINT to the benchmark alone (a terminal's Ctrl-C goes to
  the evaluator too): the evaluator is gone before the benchmark is."""
  proc, evaluators = _signal_its_evaluator_running(tmp_path, signum)
  if proc.returncode == 0:
    # Finished before the signal came: this test's process was held up for
    # the evaluator's whole life (seen once, on a busy machine). Once more;
    # a benchmark that ignored the signal would finish again.
    proc, evaluators = _signal_its_evaluator_running(tmp_path, signum)
  assert proc.returncode == 128 + signum, proc.stdout + proc.stderr
  for pid in evaluators:
    assert not os.path.exists('/proc/%d' % pid), 'evaluator %d left' % pid
  assert not list(tmp_path.glob('cifar10_benchmark-*'))
