"""Cluster training: parameter servers and workers as processes on 127.0.0.1.

Each test starts its own tasks on free ports and stops whatever is still
running at its end. A task that does not exit by itself within TIMEOUT
seconds fails the test (that is what a hang looks like).
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import tensorflow.compat.v1 as tf

import cifar10_cli
import cifar10_cluster
import cifar10_train

import cifar_testdata
from cifar_testdata import run_script, start_script

TIMEOUT = 150
# Seconds between a worker's last step line and its exit; the chief of a
# synchronous cluster that hangs on close (waiting for its update thread)
# takes minutes. (A chief whose update thread does not stop gives up on it
# after 30 s, and a busy machine takes seconds to save and exit.)
EXIT_AFTER_LAST_STEP = 45

STEP_LINE = re.compile(
    r'^(\S+ \S+): worker (\d+): step (\d+), loss = \d+\.\d\d \(([\d.]+) '
    r'examples/sec; ([\d.]+) sec/batch; cluster ([\d.]+) examples/sec\)$',
    re.M)
DONE_LINE = re.compile(r'^(\S+ \S+): worker (\d+): done: step (\d+), (.*)$',
                       re.M)
PRECISION_LINE = re.compile(
    r'precision @ 1 = \d\.\d{3} \(top-1 accuracy: \d+ / 300 correct, '
    r'checkpoint at step (\d+)\)')


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _time(stamp):
  return datetime.datetime.strptime(stamp, '%Y-%m-%d %H:%M:%S.%f')


def _latest_step(train_dir):
  path = tf.train.latest_checkpoint(train_dir)
  return int(tf.train.load_variable(path, 'global_step')) if path else None


class _Task(object):
  """One started task: its process and its log (stdout and stderr)."""

  def __init__(self, proc, log_path):
    self.proc = proc
    self.log_path = log_path
    self.exited_at = None

  def output(self):
    with open(self.log_path) as f:
      return f.read()

  def steps(self):
    """(step, worker examples/sec, cluster examples/sec) of each line."""
    return [(int(m[2]), float(m[3]), float(m[5]))
            for m in STEP_LINE.findall(self.output())]

  def wait_for(self, pattern, timeout=TIMEOUT, since=0):
    """Waits until the log from character `since` on matches `pattern`;
    returns the match."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      match = re.search(pattern, self.output()[since:], re.M)
      if match:
        return match
      if self.proc.poll() is not None:
        raise AssertionError('exited %d before logging %r:\n%s'
                             % (self.proc.returncode, pattern, self.output()))
      time.sleep(0.2)
    raise AssertionError('no %r after %d s:\n%s'
                         % (pattern, timeout, self.output()))


class _Cluster(object):
  """One ps and `num_workers` workers' addresses; the tasks it started."""

  def __init__(self, tmp_path, data_dir, num_workers=2):
    ports = _free_ports(1 + num_workers)
    self.ps = ['127.0.0.1:%d' % ports[0]]
    self.workers = ['127.0.0.1:%d' % p for p in ports[1:]]
    self._tmp_path = tmp_path
    self._data_dir = data_dir
    self._tasks = []

  def flags(self):
    return ['--ps_hosts=' + ','.join(self.ps),
            '--worker_hosts=' + ','.join(self.workers)]

  def start(self, name, *args, env=None):
    """Starts cifar10_train.py on the test data, logging to <name>.log."""
    log_path = str(self._tmp_path / ('%s.log' % name))
    with open(log_path, 'w') as log:
      proc = start_script('cifar10_train.py', '--data_dir=%s' % self._data_dir,
                          '--batch_size=16', *args, env=env, stdout=log,
                          stderr=subprocess.STDOUT)
    task = _Task(proc, log_path)
    self._tasks.append(task)
    return task

  def start_ps(self):
    return self.start('ps', *self.flags(), '--job_name=ps')

  def start_worker(self, index, train_dir, *args, name=None):
    return self.start(name or 'worker%d' % index, *self.flags(),
                      '--job_name=worker', '--task_index=%d' % index,
                      '--train_dir=%s' % train_dir, *args)

  def kill_all(self):
    for task in self._tasks:
      if task.proc.poll() is None:
        task.proc.kill()
      task.proc.wait()


def _cluster_on(tmp_path, data_dir):
  """Yields a _Cluster training on `data_dir`; kills its tasks after."""
  c = _Cluster(tmp_path, data_dir)
  try:
    yield c
  finally:
    c.kill_all()


@pytest.fixture
def cluster(tmp_path, data_dir):
  yield from _cluster_on(tmp_path, data_dir[0])


@pytest.fixture(scope='module')
def noise_data_dir(tmp_path_factory):
  """A --data_dir of random pixels and labels: nothing to learn."""
  root = tmp_path_factory.mktemp('noise_data')
  cifar_testdata.write_dataset(str(root / cifar_testdata.BATCHES_DIR),
                               learnable=False)
  return str(root)


@pytest.fixture
def noise_cluster(tmp_path, noise_data_dir):
  yield from _cluster_on(tmp_path, noise_data_dir)


def _wait_all(tasks, timeout=TIMEOUT):
  """Waits for every task to exit by itself; each must exit 0."""
  deadline = time.time() + timeout
  while any(t.exited_at is None for t in tasks):
    for t in tasks:
      if t.exited_at is None and t.proc.poll() is not None:
        t.exited_at = datetime.datetime.now()
    if time.time() > deadline:
      running = [t for t in tasks if t.exited_at is None]
      raise AssertionError('%d task(s) still running after %d s (hung?); '
                           'the first one logged:\n%s'
                           % (len(running), timeout, running[0].output()))
    time.sleep(0.2)
  for t in tasks:
    assert t.proc.returncode == 0, t.output()


def _assert_done(task, worker, step):
  """The worker logged 'done' at `step` and exited promptly after its last
  step (or, without steps, its 'done' line)."""
  output = task.output()
  done = [m for m in DONE_LINE.findall(output) if int(m[1]) == worker]
  assert done, output
  assert int(done[-1][2]) == step, output
  last = ([m[0] for m in STEP_LINE.findall(output)] or [done[-1][0]])[-1]
  lag = (task.exited_at - _time(last)).total_seconds()
  assert lag < EXIT_AFTER_LAST_STEP, 'exited %.1f s after its last step' % lag


def _stop_ps(ps):
  ps.proc.send_signal(signal.SIGTERM)
  assert ps.proc.wait(timeout=30) == 0, ps.output()
  assert 'ps 0: SIGTERM received: stopped' in ps.output()


def test_synchronous_cluster_trains_evaluates_and_resumes(cluster, data_dir,
                                                          tmp_path):
  train_dir = str(tmp_path / 'train')
  # Worker 1 is given a --train_dir of its own: it must not write there.
  other_dir = str(tmp_path / 'worker1_train')
  ps = cluster.start_ps()
  args = ['--max_steps=20', '--log_frequency=4']
  workers = [cluster.start_worker(0, train_dir, *args),
             cluster.start_worker(1, other_dir, *args)]
  _wait_all(workers)
  for i, worker in enumerate(workers):
    out = worker.output()
    assert ('worker %d: synchronous training: each global step averages 2 '
            'batches, normally one from each worker (32 images)' % i) in out
    steps = worker.steps()
    assert len(steps) >= 3 and steps[-1][0] == 20, out
    # Both workers take part in every step, so the cluster consumes twice
    # what one worker does.
    ratios = sorted(cluster_rate / rate for _, rate, cluster_rate in steps)
    assert ratios[len(ratios) // 2] == pytest.approx(2, rel=0.1), steps
    _assert_done(worker, i, 20)
  assert 'checkpoint saved in %s' % train_dir in workers[0].output()
  assert _latest_step(train_dir) == 20
  assert not tf.io.gfile.exists(other_dir)

  # The chief's checkpoints are a single machine's: evaluation reads them.
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % train_dir,
                    '--eval_dir=%s' % (tmp_path / 'eval'), '--run_once',
                    '--num_examples=300', check=0)
  assert PRECISION_LINE.search(proc.stdout).group(1) == '20'

  # Restarted on the same parameter server, the cluster resumes from the
  # chief's checkpoint, both workers training again.
  args = ['--max_steps=32', '--log_frequency=4']
  workers = [cluster.start_worker(0, train_dir, *args, name='worker0_again'),
             cluster.start_worker(1, other_dir, *args, name='worker1_again')]
  _wait_all(workers)
  assert re.search(r'resuming from .*model\.ckpt-20 \(step 20\)',
                   workers[0].output())
  for i, worker in enumerate(workers):
    steps = [s for s, _, _ in worker.steps()]
    assert steps and min(steps) > 20 and steps[-1] == 32, worker.output()
    _assert_done(worker, i, 32)
  assert _latest_step(train_dir) == 32
  assert not tf.io.gfile.exists(other_dir)
  _stop_ps(ps)


def test_tf_config_with_a_chief_job(cluster, tmp_path):
  # TF_CONFIG's chief is worker 0 and its worker 0 is our worker 1.
  spec = {'chief': cluster.workers[:1], 'worker': cluster.workers[1:],
          'ps': cluster.ps}

  def tf_config(job, index):
    return {'TF_CONFIG': json.dumps({'cluster': spec,
                                     'task': {'type': job, 'index': index}})}

  train_dir = str(tmp_path / 'train')
  args = ['--train_dir=%s' % train_dir, '--max_steps=12', '--log_frequency=4']
  ps = cluster.start('ps', env=tf_config('ps', 0))
  chief = cluster.start('chief', *args, env=tf_config('chief', 0))
  worker = cluster.start('worker', *args, env=tf_config('worker', 0))
  _wait_all([chief, worker])
  described = 'cluster from TF_CONFIG: ps %s; workers %s (chief), %s; ' % (
      cluster.ps[0], cluster.workers[0], cluster.workers[1])
  assert ('worker 0: %sthis is worker 0 at %s' % (described, cluster.workers[0])
          in chief.output())
  assert ('worker 1: %sthis is worker 1 at %s' % (described, cluster.workers[1])
          in worker.output())
  for i, task in enumerate([chief, worker]):
    assert [int(m[1]) for m in STEP_LINE.findall(task.output())] == (
        [i] * len(task.steps()))
    assert task.steps() and task.steps()[-1][0] == 12, task.output()
    _assert_done(task, i, 12)
  assert 'checkpoints are the chief\'s' in worker.output()
  assert _latest_step(train_dir) == 12
  _stop_ps(ps)

  # The whole cluster restarted with nothing left to train: the chief puts
  # its checkpoint on the new ps, and the worker, which found no variables
  # there, sees that training is over instead of waiting for a first step.
  ps = cluster.start('ps_again', env=tf_config('ps', 0))
  chief = cluster.start('chief_again', *args, env=tf_config('chief', 0))
  worker = cluster.start('worker_again', *args, env=tf_config('worker', 0))
  _wait_all([chief, worker])
  assert re.search(r'worker 0: .*model\.ckpt-12 is already at step 12, '
                   r'--max_steps=12: nothing to do', chief.output())
  assert 'worker 1: joined at global step 12' in worker.output()
  assert not worker.steps()
  _assert_done(worker, 1, 12)
  assert _latest_step(train_dir) == 12
  _stop_ps(ps)


def test_asynchronous_cluster(noise_cluster, tmp_path):
  # On random pixels: a worker that falls behind on a loaded machine applies
  # stale gradients, and at the tutorial's learning rate those diverged
  # (loss 10^22 at step 75) on the learnable data, whose gradients are large.
  # Here the loss only drifts down; the test is of the cluster, not learning.
  cluster = noise_cluster
  train_dir = str(tmp_path / 'train')
  ps = cluster.start_ps()
  # Batches of 32 (the later flag wins).
  args = ['--sync_replicas=false', '--max_steps=80', '--log_frequency=10',
          '--batch_size=32']
  workers = [cluster.start_worker(0, train_dir, *args),
             cluster.start_worker(1, str(tmp_path / 'other'), *args)]
  _wait_all(workers)
  both = []
  for i, worker in enumerate(workers):
    out = worker.output()
    assert 'asynchronous training: each worker applies its own gradients' in out
    steps = worker.steps()
    assert steps, out
    both.append(steps)
    done_step = int([m for m in DONE_LINE.findall(out)][-1][2])
    # A worker stops at the first step it sees at or past the last; the
    # other may have applied one more meanwhile.
    assert 80 <= done_step <= 81, out
    _assert_done(worker, i, done_step)
  # While both run, the global step moves faster than either worker's own
  # batches: the cluster figure is above each worker's.
  assert any(cluster_rate > 1.3 * rate
             for steps in both for _, rate, cluster_rate in steps), both
  assert 80 <= _latest_step(train_dir) <= 81
  # Only the chief writes, in asynchronous training too.
  assert not tf.io.gfile.exists(str(tmp_path / 'other'))
  _stop_ps(ps)


def test_killed_worker_rejoins_and_training_completes(cluster, tmp_path):
  train_dir = str(tmp_path / 'train')
  other_dir = str(tmp_path / 'other')
  ps = cluster.start_ps()
  args = ['--max_steps=40', '--log_frequency=5']
  chief = cluster.start_worker(0, train_dir, *args)
  worker = cluster.start_worker(1, other_dir, *args)
  worker.wait_for(r'worker 1: step ([1-9]\d+),')
  worker.proc.kill()
  worker.proc.wait()
  assert chief.proc.poll() is None  # the chief waits for the worker
  worker = cluster.start_worker(1, other_dir, *args, name='worker1_again')
  _wait_all([chief, worker])
  joined = int(re.search(r'worker 1: joined at global step (\d+)',
                         worker.output()).group(1))
  assert 10 <= joined < 40
  steps = [s for s, _, _ in worker.steps()]
  assert steps and steps[-1] == 40, worker.output()
  _assert_done(chief, 0, 40)
  _assert_done(worker, 1, 40)
  assert _latest_step(train_dir) == 40
  _stop_ps(ps)


# The --cluster_timeout_secs of _training_pair: short, as tests wait for it
# to pass, but long enough for a busy machine's chief to wait through the
# start-up of its worker.
PAIR_TIMEOUT = 5


def _training_pair(cluster, tmp_path):
  """A synchronous chief and worker 1, with --cluster_timeout_secs
  PAIR_TIMEOUT, once worker 1 has logged a step."""
  args = ['--max_steps=100000', '--log_frequency=1',
          '--cluster_timeout_secs=%d' % PAIR_TIMEOUT]
  chief = cluster.start_worker(0, str(tmp_path / 'train'), *args)
  # The worker waits as long for the chief's variables: not started before
  # the chief is about to make them, which a slow machine takes longer for.
  chief.wait_for(r'worker 0: synchronous training')
  worker = cluster.start_worker(1, str(tmp_path / 'other'), *args)
  worker.wait_for(r'worker 1: step \d+,')
  return chief, worker


def test_a_step_cancelled_while_reading_its_batch_leaves_the_input_working(
    data_dir):
  """Synchronous steps run with a timeout. One that timed out while it read
  from the tf.data iterator used to cancel the iterator for good: the next
  step raised OutOfRangeError, and a chief whose first step had timed out so
  logged 'done: step 0' and exited 0."""
  with tf.Graph().as_default():
    graph = cifar10_train.build_training_graph(
        ['/cpu:0'], data_dir[1], 16, timed_steps=True)
    with tf.train.MonitoredSession() as sess:
      timed_out = []
      # Cut off at different points of the step; a step of 16 images takes
      # milliseconds, so at least the 1 ms ones are cancelled.
      for timeout_ms in [1, 1, 5, 20, 50]:
        try:
          sess.run(graph.train_op,
                   options=tf.RunOptions(timeout_in_ms=timeout_ms))
        except tf.errors.DeadlineExceededError:
          timed_out.append(timeout_ms)
      steps = [sess.run(graph.step_after) for _ in range(3)]
  assert 1 in timed_out
  assert steps == list(range(steps[0], steps[0] + 3)), steps


def test_synchronous_training_goes_on_without_a_dead_worker(cluster,
                                                            tmp_path):
  """After --cluster_timeout_secs without a global step, the chief sends
  another batch in place of the missing worker's, step after step."""
  ps = cluster.start_ps()
  chief, worker = _training_pair(cluster, tmp_path)
  worker.proc.kill()
  worker.proc.wait()
  # Not a line from before the worker joined.
  chief.wait_for(r'worker 0: no global step for %d s \(a worker down\?\): '
                 r'sending another batch' % PAIR_TIMEOUT,
                 since=len(chief.output()))
  # Then steps again.
  logged = len(chief.output())
  deadline = time.time() + TIMEOUT
  while len(STEP_LINE.findall(chief.output()[logged:])) < 2:
    assert time.time() < deadline and chief.proc.poll() is None, (
        chief.output()[logged:])
    time.sleep(0.2)
  chief.proc.send_signal(signal.SIGTERM)
  assert chief.proc.wait(timeout=60) == 128 + signal.SIGTERM, chief.output()
  _stop_ps(ps)


def test_worker_gives_up_without_its_chief(cluster, tmp_path):
  """With the chief gone, no step completes: after twice
  --cluster_timeout_secs a worker stops with an error that says why."""
  cluster.start_ps()
  chief, worker = _training_pair(cluster, tmp_path)
  chief.proc.kill()
  chief.proc.wait()
  assert worker.proc.wait(timeout=60) == 1, worker.output()
  assert ('cifar10_train.py: error: worker 1: no global step for %d s (2 x '
          '--cluster_timeout_secs): is the chief (worker 0) running?'
          % (2 * PAIR_TIMEOUT) in worker.output())


def test_signal_stops_a_worker_whose_step_waits_for_its_chief(cluster,
                                                              tmp_path):
  """Signalled while its step waits for a chief that is gone: it stops
  when the step gives up, with the signal's status, sending no more
  batches."""
  cluster.start_ps()
  chief, worker = _training_pair(cluster, tmp_path)
  chief.proc.kill()
  chief.proc.wait()
  time.sleep(1)  # Into a step that waits for the chief.
  worker.proc.send_signal(signal.SIGTERM)
  assert worker.proc.wait(timeout=60) == 128 + signal.SIGTERM, (
      worker.output())
  assert 'sending another batch' not in worker.output()
  assert re.search(r'worker 1: stopped at step \d+; checkpoints are the '
                   r"chief's", worker.output()), worker.output()


def test_signal_stops_a_worker_waiting_for_its_chief_at_once(cluster,
                                                             tmp_path):
  """Before any session, nothing is saved: it need not wait for the chief
  (--cluster_timeout_secs, 60 s here) to exit."""
  cluster.start_ps()
  worker = cluster.start_worker(1, str(tmp_path / 'other'),
                                '--cluster_timeout_secs=60')
  worker.wait_for(r'waiting for the chief \(worker 0\)')
  started = time.time()
  worker.proc.send_signal(signal.SIGTERM)
  assert worker.proc.wait(timeout=60) == 128 + signal.SIGTERM, (
      worker.output())
  assert time.time() - started < 30, worker.output()
  assert ('worker 1: SIGTERM received while waiting for the chief: exiting'
          in worker.output())


def test_worker_waits_for_the_ps_then_gives_up(cluster, data_dir, tmp_path):
  # Started before its ps, a worker waits, then trains once the ps is up.
  one_worker = cluster.flags()[0], '--worker_hosts=' + cluster.workers[0]
  chief = cluster.start('worker', *one_worker, '--job_name=worker',
                        '--train_dir=%s' % (tmp_path / 'train'),
                        '--max_steps=4', '--log_frequency=2')
  chief.wait_for(r'worker 0: waiting for ps %s\.\.\.$'
                 % re.escape(cluster.ps[0]))
  ps = cluster.start('ps', *one_worker, '--job_name=ps')
  _wait_all([chief])
  assert 'worker 0: ps %s is up' % cluster.ps[0] in chief.output()
  _assert_done(chief, 0, 4)
  _stop_ps(ps)
  # With the ps gone, it gives up after --cluster_timeout_secs, before
  # --fresh removed anything.
  trained = sorted(os.listdir(str(tmp_path / 'train')))
  proc = run_script('cifar10_train.py', *one_worker, '--job_name=worker',
                    '--train_dir=%s' % (tmp_path / 'train'), '--fresh',
                    '--data_dir=%s' % data_dir[0], '--cluster_timeout_secs=2',
                    '--max_steps=8')
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_train.py: error: worker 0: ps %s did not answer within 2 s '
      '(--cluster_timeout_secs): Connection refused' % cluster.ps[0])
  assert sorted(os.listdir(str(tmp_path / 'train'))) == trained
  # Nor does it wait for ever on a listener that is not a TensorFlow server.
  with socket.socket() as listener:
    listener.bind(tuple(cifar10_cluster.split_address(cluster.ps[0])))
    listener.listen()
    proc = run_script('cifar10_train.py', *one_worker, '--job_name=worker',
                      '--train_dir=%s' % (tmp_path / 'train3'),
                      '--data_dir=%s' % data_dir[0],
                      '--cluster_timeout_secs=2', '--max_steps=4', timeout=60)
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_train.py: error: worker 0: ps %s did not answer within 2 s '
      '(--cluster_timeout_secs): it accepts connections, but no TensorFlow '
      'server answers there; is it a ps of this cluster (--job_name=ps)?'
      % cluster.ps[0])


@pytest.mark.parametrize('sync', ['true', 'false'])
def test_worker_exits_when_its_ps_dies(cluster, tmp_path, sync):
  """A ps killed mid-training: the failed step's session could not even be
  closed (TensorFlow waits for the ps forever, deaf to signals), so the
  worker used to hang; it exits with a one-line error naming the ps, and the
  chief's checkpoints stay."""
  one_worker = cluster.flags()[0], '--worker_hosts=' + cluster.workers[0]
  train_dir = str(tmp_path / 'train')
  ps = cluster.start('ps', *one_worker, '--job_name=ps')
  chief = cluster.start('worker', *one_worker, '--job_name=worker',
                        '--train_dir=%s' % train_dir, '--max_steps=100000',
                        '--log_frequency=5', '--save_checkpoint_steps=5',
                        '--cluster_timeout_secs=5', '--sync_replicas=' + sync)
  chief.wait_for(r'worker 0: step [1-9]\d+,')
  ps.proc.kill()
  ps.proc.wait()
  assert chief.proc.wait(timeout=30) == 1, chief.output()
  # TensorFlow's reason varies: 'Socket closed', 'recvmsg:Connection reset
  # by peer'.
  errors = re.findall(r'^cifar10_train\.py: error: (.*)$', chief.output(),
                      re.M)
  assert len(errors) == 1 and re.fullmatch(
      r"worker 0: lost ps 0 at %s \([^()]+\): restart it, then every "
      r"worker; training resumes from the chief's newest checkpoint"
      % re.escape(cluster.ps[0]), errors[0]), chief.output()
  assert _latest_step(train_dir) >= 5


@pytest.mark.parametrize('args,env,message', [
    (['--job_name=worker'], None, '--job_name=worker needs --ps_hosts'),
    (['--ps_hosts=127.0.0.1:1', '--worker_hosts=127.0.0.1:2',
      '--job_name=worker', '--task_index=1'], None,
     '--task_index=1 is out of range: --worker_hosts lists 1 task(s)'),
    ([], {'TF_CONFIG': '{"cluster": {"ps": ['},
     'TF_CONFIG is not valid JSON: Expecting value: line 1 column 21 '
     '(char 20)'),
])
def test_bad_cluster_is_a_one_line_usage_error(args, env, message, tmp_path):
  proc = run_script('cifar10_train.py', '--train_dir=%s' % tmp_path, *args,
                    env=env)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_train.py: error: ' + message)
  assert proc.stdout == ''  # nothing started


@pytest.mark.parametrize('flags,tf_config,message', [
    (('', '127.0.0.1:2', 'worker', 0), None,
     '--job_name=worker needs --ps_hosts'),
    (('127.0.0.1:1', '127.0.0.1:2', None, 0), None,
     '--ps_hosts and --worker_hosts need --job_name=ps or --job_name=worker'),
    (('127.0.0.1:1', 'localhost', 'worker', 0), None,
     "--worker_hosts: 'localhost' is not host:port"),
    (('127.0.0.1:1', 'a:2,,b:3', 'worker', 0), None,
     '--worker_hosts=a:2,,b:3 has an empty entry'),
    (('127.0.0.1:1', 'a:70000', 'worker', 0), None,
     "--worker_hosts: 'a:70000' is not host:port"),
    (('127.0.0.1:1', 'a:2', 'ps', 1), None,
     '--task_index=1 is out of range: --ps_hosts lists 1 task(s)'),
    # A ps index is checked against the ps tasks, not the workers.
    (('127.0.0.1:1', 'a:2,b:3', 'ps', 1), None,
     '--task_index=1 is out of range: --ps_hosts lists 1 task(s)'),
    (('a:1', 'a:1,b:2', 'worker', 0), None,
     'a:1 is listed twice in the cluster: each task needs its own host:port'),
    # The same task written another way.
    (('a:2222', 'A:2222,b:2', 'worker', 0), None,
     'A:2222 is listed twice in the cluster: each task needs its own '
     'host:port'),
    (('a:2222', 'a:02222,b:2', 'worker', 0), None,
     'a:02222 is listed twice in the cluster: each task needs its own '
     'host:port'),
    # Addresses that would only fail once the servers start.
    (('local host:1', 'b:2', 'worker', 0), None,
     "--ps_hosts: 'local host:1' is not host:port"),
    (('http://p:1', 'b:2', 'worker', 0), None,
     "--ps_hosts: 'http://p:1' is not host:port"),
    (('', '', None, 0), '{"cluster": {"ps": [" a:1"], "worker": ["b:1"]}, '
     '"task": {"type": "ps"}}',
     "TF_CONFIG cluster \"ps\": ' a:1' is not host:port"),
    # A task without a usable cluster: not training alone, silently.
    (('', '', None, 0), '{"clusters": {"ps": ["a:1"], "worker": ["b:1"]}, '
     '"task": {"type": "worker", "index": 1}}',
     'TF_CONFIG has a "task" ({"index": 1, "type": "worker"}) but no '
     '"cluster" listing the tasks'),
    (('', '', None, 0), '{"cluster": {}, "task": {"type": "worker"}}',
     'TF_CONFIG has a "task" ({"type": "worker"}) but no "cluster" listing '
     'the tasks'),
    (('', '', None, 0), '{"cluster": [], "task": {"type": "worker"}}',
     'TF_CONFIG "cluster" must map job names to lists of "host:port"'),
    (('', '', None, 3), None,
     '--task_index=3 needs --job_name, --ps_hosts and --worker_hosts'),
    (('', '', None, 0), '[1]',
     'TF_CONFIG must be a JSON object with "cluster" and "task"'),
    (('', '', None, 0), '{"cluster": {"worker": ["a:1"]}, "task": '
     '{"type": "worker"}}',
     'TF_CONFIG cluster "ps" lists no ps task: a cluster needs at least one'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}}',
     'TF_CONFIG has no "task" saying which task of the cluster this process '
     'is'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, '
     '"task": {"type": "worker", "index": 1}}',
     'TF_CONFIG task index 1 is out of range: cluster "worker" lists 1 '
     'task(s)'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, '
     '"task": {"type": "worker", "index": "1"}}',
     'TF_CONFIG task index "1" is not an integer'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "evaluator": ["b:1"]}, '
     '"task": {"type": "ps"}}',
     'TF_CONFIG: job "evaluator" is not supported here (only chief, worker, '
     'ps; evaluate with cifar10_eval.py)'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "chief": ["b:1", "c:1"]}, '
     '"task": {"type": "ps"}}',
     'TF_CONFIG cluster "chief" lists 2 tasks; there is one chief'),
    (('', '', None, 0), '{"cluster": {"ps": "a:1"}, "task": {"type": "ps"}}',
     'TF_CONFIG cluster "ps" must be a list of "host:port" strings'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, '
     '"task": {"type": "chief"}}',
     'TF_CONFIG task type "chief" is not a job of its cluster (ps, worker)'),
    (('', '', None, 0), '{"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, '
     '"task": {"type": ["worker"]}}',
     'TF_CONFIG task type ["worker"] is not a job of its cluster (ps, '
     'worker)'),
])
def test_cluster_validation_messages(flags, tf_config, message):
  with pytest.raises(cifar10_cli.UsageError) as error:
    cifar10_cluster.parse_cluster(*flags, tf_config=tf_config)
  assert str(error.value) == message


def test_cluster_from_flags_and_tf_config():
  task = cifar10_cluster.parse_cluster('p:1,q:1', 'a:1, b:2', 'worker', 1,
                                       tf_config='{"not": "used"}')
  assert task == cifar10_cluster.Task(
      {'ps': ['p:1', 'q:1'], 'worker': ['a:1', 'b:2']}, 'worker', 1, 'flags')
  assert (task.name, task.is_chief, task.num_workers, task.address) == (
      'worker 1', False, 2, 'b:2')
  config = json.dumps({'cluster': {'chief': ['c:1'], 'worker': ['w:1', 'w:2'],
                                   'ps': ['[::1]:5']},
                       'task': {'type': 'worker', 'index': 1}})
  task = cifar10_cluster.parse_cluster('', '', None, 0, config)
  assert task == cifar10_cluster.Task(
      {'ps': ['[::1]:5'], 'worker': ['c:1', 'w:1', 'w:2']}, 'worker', 2,
      'TF_CONFIG')
  config = json.dumps({'cluster': {'chief': ['c:1'], 'ps': ['p:1']},
                       'task': {'type': 'chief', 'index': 0}})
  assert cifar10_cluster.parse_cluster('', '', None, 0, config).is_chief
  # No cluster: training on this machine.
  for tf_config in (None, '', '{}', '{"cluster": {}, "task": {}}',
                    '{"cluster": null}'):
    assert cifar10_cluster.parse_cluster('', '', None, 0, tf_config) is None


def test_servers_leave_gpu_memory_to_the_workers():
  """A parameter server creates no GPU device; a worker's server takes GPU
  memory as needed (a session's options cannot change either later)."""
  jobs = {'ps': ['p:1'], 'worker': ['w:1']}
  ps = cifar10_cluster.server_config(cifar10_cluster.Task(jobs, 'ps', 0, ''))
  assert ps.device_count['GPU'] == 0
  worker = cifar10_cluster.server_config(
      cifar10_cluster.Task(jobs, 'worker', 0, ''))
  assert 'GPU' not in worker.device_count
  assert worker.gpu_options.allow_growth


def test_start_server_uses_the_server_config(monkeypatch):
  """The options reach the server: a session's cannot change its devices."""
  task = cifar10_cluster.Task({'ps': ['p:1'], 'worker': ['w:1']}, 'ps', 0, '')
  made = []
  monkeypatch.setattr(tf.train, 'Server',
                      lambda *args, **kwargs: made.append(kwargs) or 'server')
  assert cifar10_cluster.start_server(task) == 'server'
  assert made[0]['config'] == cifar10_cluster.server_config(task)


def _ancestors(tensors_or_ops):
  """{name: op} of every op that running `tensors_or_ops` runs."""
  todo = [getattr(t, 'op', t) for t in tensors_or_ops]
  seen = {}
  while todo:
    op = todo.pop()
    if op.name in seen:
      continue
    seen[op.name] = op
    todo.extend(t.op for t in op.inputs)
    todo.extend(op.control_inputs)
  return seen


def _average_updates(ops):
  """The assignments to the moving averages (0.9999) of the weights."""
  return [name for name, op in ops.items()
          if 'ExponentialMovingAverage/AssignMovingAvg' in name
          and op.type.startswith('Assign')]


def test_sync_replicas_update_averages_once_per_step_on_the_chief(data_dir):
  with tf.Graph().as_default():
    local = cifar10_train.build_training_graph(['/cpu:0'], data_dir[1], 8)
    local_variables = sorted(v.op.name for v in tf.global_variables())
    local_train = _ancestors([local.train_op])
  with tf.Graph().as_default():
    sync = cifar10_cluster.SyncReplicasHook(True, num_workers=2, last_step=10)
    graph = cifar10_train.build_training_graph(
        ['/cpu:0'], data_dir[1], 8, replicas=2, wrap_optimizer=sync.wrap)
    sync.begin()
    sync_variables = sorted(v.op.name for v in tf.global_variables())
    local_only = [v.op.name for v in tf.local_variables()]
    train = _ancestors([graph.train_op])
    update = _ancestors(sync.optimizer.get_chief_queue_runner().enqueue_ops)
  # One machine: each step updates the averages of the weights.
  assert len(_average_updates(local_train)) == 10
  # Synchronous: a worker's step does not; the chief's update of the
  # aggregated step does, and it reads no batch and computes no loss.
  assert not _average_updates(train)
  assert len(_average_updates(update)) == 10
  assert not [n for n in update if 'IteratorGetNext' in n
              or 'cross_entropy' in n]
  assert 'IteratorGetNext' in train
  # The optimizer's state is in no checkpoint: the same variables are saved.
  assert sync_variables == local_variables
  assert 'sync_rep_local_step' in local_only
  # The learning-rate schedule counts the batches of both workers.
  assert graph.examples_per_step == 16
