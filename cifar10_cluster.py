"""Cluster training on TensorFlow's distributed runtime (gRPC ps/worker).

cifar10_train.py (and cifar10_multi_gpu_train.py) become one task of a
cluster when given the cluster, on each machine:

  python cifar10_train.py --ps_hosts=ps0:2222 --worker_hosts=w0:2222,w1:2222 \
      --job_name=worker --task_index=1

or, without these flags, through the standard TF_CONFIG environment variable:

  TF_CONFIG='{"cluster": {"ps": ["ps0:2222"], "worker": ["w0:2222", "w1:2222"]},
              "task": {"type": "worker", "index": 1}}'

where a "chief" job, if there is one, is worker 0 and TF_CONFIG's workers
follow it. The tasks:

  ps N      holds a share of the variables (`tf.train.replica_device_setter`)
            and serves them until it is stopped (SIGTERM or Ctrl-C).
  worker N  builds the whole model on its own input pipeline (its own
            --data_dir) and sends its gradients to the parameter servers.
            Worker 0 is the chief: it initializes the variables or restores
            them from the newest checkpoint in --train_dir, and writes the
            checkpoints and summaries there. The other workers write nothing.

Synchronous training (the default) wraps the optimizer of `cifar10.train` in
a `tf.train.SyncReplicasOptimizer`: each global step averages as many batches
as there are workers, normally one from each (see `SyncReplicasHook`), so a
step is a step of one machine on the global batch, and the learning-rate schedule counts that batch. With
--sync_replicas=false each worker applies its own gradients as soon as they
are computed; a global step is then one worker's batch.

Every worker stops by itself at --max_steps (of the global step); the
parameter servers serve until they are stopped.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import collections
import contextlib
import json
import re
import signal
import socket
import sys
import threading
import time

import tensorflow.compat.v1 as tf

import cifar10_cli

FLAGS = tf.app.flags.FLAGS

tf.app.flags.DEFINE_string(
    'ps_hosts', '',
    """Cluster training: comma-separated host:port of the parameter servers.
    With --worker_hosts and --job_name; without them, TF_CONFIG if set.""")
tf.app.flags.DEFINE_string(
    'worker_hosts', '',
    """Cluster training: comma-separated host:port of the workers; the first
    is the chief, which writes checkpoints and summaries.""")
tf.app.flags.DEFINE_enum('job_name', None, ['ps', 'worker'],
                         """Cluster training: this task's job.""")
tf.app.flags.DEFINE_integer(
    'task_index', 0, """Cluster training: this task's index in its job.""")
tf.app.flags.DEFINE_boolean(
    'sync_replicas', True,
    """Cluster training: average as many batches as there are workers,
    normally one of each, in each global step (synchronous); false: each
    worker applies its own gradients.""")
tf.app.flags.DEFINE_integer(
    'cluster_timeout_secs', 180,
    """Cluster training: how long a worker waits for the parameter servers
    and for the chief at start, and, in synchronous training, for a global
    step before it sends another batch (a worker may be down).""")

cifar10_cli.non_negative('task_index')
cifar10_cli.positive('cluster_timeout_secs')

# The jobs of TF_CONFIG that map onto ours: its chief is our worker 0.
_TF_CONFIG_JOBS = ('chief', 'worker', 'ps')


class Task(collections.namedtuple('Task', ['jobs', 'job_name', 'task_index',
                                           'source'])):
  """This process's place in a cluster.

  Attributes:
    jobs: {'ps': [host:port, ...], 'worker': [host:port, ...]}.
    job_name: 'ps' or 'worker'.
    task_index: index in the job's list.
    source: where the cluster came from, 'flags' or 'TF_CONFIG'.
  """

  @property
  def name(self):
    """'worker 1', as log lines name the task."""
    return '%s %d' % (self.job_name, self.task_index)

  @property
  def is_chief(self):
    return self.job_name == 'worker' and self.task_index == 0

  @property
  def num_workers(self):
    return len(self.jobs['worker'])

  @property
  def address(self):
    return self.jobs[self.job_name][self.task_index]

  def cluster_spec(self):
    return tf.train.ClusterSpec(self.jobs)

  def describe(self):
    """One line: the cluster, and which task this is."""
    workers = ['%s%s' % (a, ' (chief)' if i == 0 else '')
               for i, a in enumerate(self.jobs['worker'])]
    return 'cluster from %s: ps %s; workers %s; this is %s at %s' % (
        self.source, ', '.join(self.jobs['ps']), ', '.join(workers),
        self.name, self.address)


# A host name or IPv4 address, or an IPv6 address in brackets; a port of
# up to 5 digits. Anything else (a space, a scheme such as http://) would
# only fail once the servers start, as a timeout or a misleading error.
_ADDRESS = re.compile(r'(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})')


def split_address(address):
  """'host:port' -> (host, port); an IPv6 host is in brackets.

  Raises:
    ValueError: if `address` is not host:port with a port of 1-65535.
  """
  match = _ADDRESS.fullmatch(address)
  if not match or not 0 < int(match.group(2)) < 65536:
    raise ValueError('%r is not host:port' % address)
  return match.group(1).strip('[]'), int(match.group(2))


def _addresses(where, addresses):
  """Checks a list of host:port strings; UsageError naming `where`."""
  for address in addresses:
    try:
      split_address(address)
    except ValueError as e:
      raise cifar10_cli.UsageError('%s: %s' % (where, e))
  return addresses


def _hosts_flag(flag, value):
  """The host:port list of a comma-separated flag."""
  hosts = [h.strip() for h in value.split(',')]
  if '' in hosts:
    raise cifar10_cli.UsageError('--%s=%s has an empty entry' % (flag, value))
  return _addresses('--' + flag, hosts)


def _task(ps, workers, job_name, task_index, source, names):
  """Checks the cluster as a whole and returns the Task.

  Args:
    ps, workers: host:port lists.
    job_name, task_index: this task.
    source: 'flags' or 'TF_CONFIG'.
    names: {'ps': ..., 'worker': ...}, how to name each list in an error.
  """
  jobs = {'ps': ps, 'worker': workers}
  for job in ('ps', 'worker'):
    if not jobs[job]:
      raise cifar10_cli.UsageError('%s lists no %s task: a cluster needs at '
                                   'least one' % (names[job], job))
  seen = set()
  for address in ps + workers:
    # Host names are case-insensitive, and a port is a number.
    host, port = split_address(address)
    if (host.lower(), port) in seen:
      raise cifar10_cli.UsageError(
          '%s is listed twice in the cluster: each task needs its own '
          'host:port' % address)
    seen.add((host.lower(), port))
  return Task(jobs, job_name, task_index, source)


def _task_from_tf_config(text):
  """The Task that TF_CONFIG describes; None if it has no cluster."""
  try:
    config = json.loads(text)
  except ValueError as e:
    raise cifar10_cli.UsageError('TF_CONFIG is not valid JSON: %s' % e)
  if not isinstance(config, dict):
    raise cifar10_cli.UsageError('TF_CONFIG must be a JSON object with '
                                 '"cluster" and "task"')
  cluster, task = config.get('cluster'), config.get('task')
  if cluster is not None and not isinstance(cluster, dict):
    raise cifar10_cli.UsageError('TF_CONFIG "cluster" must map job names to '
                                 'lists of "host:port"')
  if not cluster:
    if task:
      # A misspelt key, say: training alone would write its own checkpoints.
      raise cifar10_cli.UsageError(
          'TF_CONFIG has a "task" (%s) but no "cluster" listing the tasks'
          % json.dumps(task, sort_keys=True))
    return None  # TF_CONFIG without a cluster: not cluster training.
  for job, addresses in sorted(cluster.items()):
    if job not in _TF_CONFIG_JOBS:
      raise cifar10_cli.UsageError(
          'TF_CONFIG: job "%s" is not supported here (only %s; evaluate with '
          'cifar10_eval.py)' % (job, ', '.join(_TF_CONFIG_JOBS)))
    if not (isinstance(addresses, list)
            and all(isinstance(a, str) for a in addresses)):
      raise cifar10_cli.UsageError('TF_CONFIG cluster "%s" must be a list of '
                                   '"host:port" strings' % job)
    _addresses('TF_CONFIG cluster "%s"' % job, addresses)
  chief = cluster.get('chief', [])
  if len(chief) > 1:
    raise cifar10_cli.UsageError('TF_CONFIG cluster "chief" lists %d tasks; '
                                 'there is one chief' % len(chief))
  if not isinstance(task, dict):
    raise cifar10_cli.UsageError('TF_CONFIG has no "task" saying which task '
                                 'of the cluster this process is')
  job_name, index = task.get('type'), task.get('index', 0)
  # A list or an object is no job name (nor hashable).
  if not isinstance(job_name, str) or job_name not in cluster:
    raise cifar10_cli.UsageError(
        'TF_CONFIG task type %s is not a job of its cluster (%s)'
        % (json.dumps(job_name), ', '.join(sorted(cluster))))
  if not isinstance(index, int) or isinstance(index, bool):
    raise cifar10_cli.UsageError('TF_CONFIG task index %s is not an integer'
                                 % json.dumps(index))
  if not 0 <= index < len(cluster[job_name]):
    raise cifar10_cli.UsageError(
        'TF_CONFIG task index %s is out of range: cluster "%s" lists %d '
        'task(s)' % (json.dumps(index), job_name, len(cluster[job_name])))
  # The chief is worker 0; TF_CONFIG's workers follow it.
  if job_name == 'chief':
    job_name = 'worker'
  elif job_name == 'worker':
    index += len(chief)
  return _task(cluster.get('ps', []), chief + cluster.get('worker', []),
               job_name, index, 'TF_CONFIG',
               {'ps': 'TF_CONFIG cluster "ps"',
                'worker': 'TF_CONFIG cluster "chief" and "worker"'})


def parse_cluster(ps_hosts, worker_hosts, job_name, task_index, tf_config):
  """This process's Task from the cluster flags, else from TF_CONFIG.

  Args:
    ps_hosts, worker_hosts: the flags' comma-separated host:port lists.
    job_name: 'ps', 'worker' or None.
    task_index: --task_index.
    tf_config: the TF_CONFIG environment variable, or None.

  Returns:
    A Task, or None to train on this machine alone.

  Raises:
    cifar10_cli.UsageError: naming the flag or TF_CONFIG, if they describe
      no valid cluster.
  """
  if ps_hosts or worker_hosts or job_name:
    if not job_name:
      raise cifar10_cli.UsageError('--ps_hosts and --worker_hosts need '
                                   '--job_name=ps or --job_name=worker')
    for flag, value in (('ps_hosts', ps_hosts),
                        ('worker_hosts', worker_hosts)):
      if not value:
        raise cifar10_cli.UsageError('--job_name=%s needs --%s'
                                     % (job_name, flag))
    ps = _hosts_flag('ps_hosts', ps_hosts)
    workers = _hosts_flag('worker_hosts', worker_hosts)
    count = len(ps if job_name == 'ps' else workers)
    if not 0 <= task_index < count:
      raise cifar10_cli.UsageError(
          '--task_index=%d is out of range: --%s_hosts lists %d task(s)'
          % (task_index, job_name, count))
    return _task(ps, workers, job_name, task_index, 'flags',
                 {'ps': '--ps_hosts', 'worker': '--worker_hosts'})
  if task_index:
    raise cifar10_cli.UsageError('--task_index=%d needs --job_name, '
                                 '--ps_hosts and --worker_hosts' % task_index)
  if tf_config and tf_config.strip():
    return _task_from_tf_config(tf_config)
  return None


def task_from_flags(environ):
  """parse_cluster on the flags and `environ`'s TF_CONFIG."""
  return parse_cluster(FLAGS.ps_hosts, FLAGS.worker_hosts, FLAGS.job_name,
                       FLAGS.task_index, environ.get('TF_CONFIG'))


def start_server(task):
  """This task's gRPC server.

  Raises:
    OSError: if it cannot listen on its port (in use, or not this host's).
  """
  try:
    return tf.train.Server(task.cluster_spec(), job_name=task.job_name,
                           task_index=task.task_index,
                           config=server_config(task))
  except tf.errors.OpError as e:
    raise OSError('%s cannot listen on %s (port in use?): %s'
                  % (task.name, task.address, cifar10_cli.one_line(e)))


def server_config(task):
  """The options under which `task`'s server creates its devices.

  Session options cannot change them later. A parameter server keeps the
  variables on its CPU, so it creates no GPU device: on a host it shares
  with a worker it takes none of that GPU's memory. A worker takes GPU
  memory as it needs it, like the scripts on one machine
  (`cifar10_cli.session_config`).
  """
  if task.job_name == 'ps':
    return tf.ConfigProto(device_count={'GPU': 0})
  return cifar10_cli.session_config()


def serve(task):
  """Runs a parameter server until SIGTERM or SIGINT.

  Returns:
    Exit status 0.
  """
  # Keep the server referenced until the end: it serves while it exists.
  server = start_server(task)
  cifar10_cli.log('serving the variables at %s to %d worker(s) until '
                  'stopped (SIGTERM or Ctrl-C)' % (task.address,
                                                   task.num_workers))
  received = []
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda signum, unused_frame: received.append(signum))
  # Not server.join(): it blocks in C++, where Python never runs signal
  # handlers.
  while not received:
    time.sleep(0.5)
  cifar10_cli.log('%s received: stopped %s' % (
      signal.Signals(received[0]).name, server.target))
  return 0


def device_setter(task):
  """Variables on the parameter servers (round robin), the rest here."""
  return tf.train.replica_device_setter(
      cluster=task.cluster_spec(),
      worker_device='/job:worker/task:%d' % task.task_index)


def session_config(task, config):
  """`config` with this worker and the parameter servers as its devices.

  Without the filter a session waits for every task of the cluster, so a
  worker could not start, or restart, while another is down.
  """
  config.device_filters.extend(
      ['/job:ps', '/job:worker/task:%d' % task.task_index])
  return config


def wait_for_ps(task, server, timeout_secs):
  """Waits until every parameter server accepts connections and answers as a
  TensorFlow server.

  Args:
    task: this worker's Task.
    server: its server, whose master asks the parameter servers.
    timeout_secs: how long to wait, in all.

  Raises:
    TimeoutError: naming the first that did not within `timeout_secs`.
  """
  deadline = time.time() + timeout_secs
  for index, address in enumerate(task.jobs['ps']):
    host, port = split_address(address)
    waiting = False
    while True:
      try:
        socket.create_connection((host, port), timeout=5).close()
        break
      except OSError as e:
        if time.time() >= deadline:
          raise TimeoutError(
              'ps %s did not answer within %d s (--cluster_timeout_secs): %s'
              % (address, timeout_secs, e.strerror or e))
        if not waiting:
          cifar10_cli.log('waiting for ps %s...' % address)
          waiting = True
        time.sleep(0.5)
    if waiting:
      cifar10_cli.log('ps %s is up' % address)
    # Any listener accepts connections, and a session waits for a task that
    # does not answer as long as it does not (in C++, where no signal
    # handler runs), whatever its timeout. A session of this ps alone asks
    # it, through an RPC whose deadline the master cannot ignore.
    with tf.Graph().as_default():
      with tf.device('/job:ps/task:%d' % index):
        probe = tf.no_op()
      config = tf.ConfigProto(
          device_filters=['/job:ps/task:%d' % index],
          operation_timeout_in_ms=int(1000 * max(1, deadline - time.time())))
      config.rpc_options.use_rpc_for_inprocess_master = True
      try:
        with tf.Session(server.target, config=config) as sess:
          sess.run(probe)
      except tf.errors.DeadlineExceededError:
        raise TimeoutError(
            'ps %s did not answer within %d s (--cluster_timeout_secs): it '
            'accepts connections, but no TensorFlow server answers there; is '
            'it a ps of this cluster (--job_name=ps)?'
            % (address, timeout_secs))


# The errors of a step that lost a parameter server. A MonitoredSession
# closes its session on them to create another, but closing a session one
# of whose steps failed on a task that is gone waits for that task forever
# (TensorFlow 2.21; in C++, where no signal handler runs).
PS_LOST_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError)


def lost_ps_message(task, error):
  """The one-line error for a step that failed with a PS_LOST_ERRORS."""
  text = str(error)
  match = re.search(r'/job:ps/replica:\d+/task:(\d+)', text)
  if match and int(match.group(1)) < len(task.jobs['ps']):
    ps = 'ps %s at %s' % (match.group(1), task.jobs['ps'][int(match.group(1))])
  else:
    ps = 'a ps (%s)' % ', '.join(task.jobs['ps'])
  # TensorFlow's reason follows the line that names the failed task.
  reason = re.search(r'From /job:\S+:\n(.+)', text)
  return ('lost %s (%s): restart it, then every worker; training resumes '
          'from the chief\'s newest checkpoint' % (
              ps, reason.group(1) if reason else type(error).__name__))


@contextlib.contextmanager
def exit_on_lost_ps(task):
  """Exits at once, with `lost_ps_message`, if the body loses a ps.

  Not through the session's close, which would wait for the ps forever (see
  PS_LOST_ERRORS), nor through a MonitoredSession, which would close the
  session to create another. The chief's checkpoints are on disk already;
  its summaries are written out first. Without a cluster (`task` None) the
  errors pass.
  """
  try:
    yield
  except PS_LOST_ERRORS as e:
    if task is None:
      raise
    tf.summary.FileWriterCache.clear()
    cifar10_cli.fail(lost_ps_message(task, e), at_once=True)


class WorkerSessionCreator(tf.train.SessionCreator):
  """A non-chief worker's session, once the chief has set up the variables.

  `tf.train.WorkerSessionCreator` looks every 30 s; this looks every second,
  gives up with a one-line error after `timeout_secs`, and exits (status
  128 + the signal) once `stop_signal()` names a signal received meanwhile:
  there is nothing to save yet.
  """

  def __init__(self, master, config, timeout_secs, stop_signal):
    self._master = master
    self._config = config
    self._timeout_secs = timeout_secs
    self._stop_signal = stop_signal
    self._scaffold = tf.train.Scaffold()

  def create_session(self):
    self._scaffold.finalize()
    manager = tf.train.SessionManager(
        local_init_op=self._scaffold.local_init_op,
        ready_op=self._scaffold.ready_op,
        ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
        graph=tf.get_default_graph(), recovery_wait_secs=1)
    cifar10_cli.log('waiting for the chief (worker 0) to initialize or '
                    'restore the variables...')
    deadline = time.time() + self._timeout_secs
    while True:
      try:
        # One look, or two a second apart.
        return manager.wait_for_session(self._master, config=self._config,
                                        max_wait_secs=1)
      except tf.errors.DeadlineExceededError:
        signum = self._stop_signal()
        if signum is not None:
          cifar10_cli.log('%s received while waiting for the chief: '
                          'exiting' % signal.Signals(signum).name)
          sys.exit(128 + signum)
        if time.time() >= deadline:
          raise tf.errors.DeadlineExceededError(
              None, None, 'the chief (worker 0) did not initialize the '
              'variables within %d s (--cluster_timeout_secs)'
              % self._timeout_secs)


def publish_checkpoint(master, config, checkpoint):
  """Restores `checkpoint` onto the parameter servers.

  For a chief with nothing left to train: workers waiting for it then find
  the finished model, and stop, instead of waiting for variables that no
  session would initialize.
  """
  saver = tf.train.Saver()
  with tf.Session(master, config=config) as sess:
    saver.restore(sess, checkpoint)


class _SyncReplicasOptimizer(tf.train.SyncReplicasOptimizer):
  """A SyncReplicasOptimizer that builds no op it flags as never used.

  Its readiness check logs a multi-line error at exit when no session ran
  it, e.g. after a worker's one-line error; SyncReplicasHook runs it.
  """

  def apply_gradients(self, *args, **kwargs):
    train_op = super(_SyncReplicasOptimizer, self).apply_gradients(
        *args, **kwargs)
    getattr(self.ready_for_local_init_op, 'mark_used', lambda: None)()
    return train_op


class SyncReplicasHook(tf.train.SessionRunHook):
  """Synchronous training with a `tf.train.SyncReplicasOptimizer`.

  `wrap` is the `wrap_optimizer` of `cifar10.train`. Each worker's train op
  puts its gradients in accumulators on the parameter servers, then waits
  for a token. The chief, in a thread of its own, takes as many gradients as
  there are workers from the accumulators (gradients of an older step are
  dropped), applies their average, increments the global step, updates the
  moving averages of the weights and hands out one token per worker. As a
  worker waits for its token after each batch, a step normally has one batch
  of each; the optimizer counts gradients, not workers, so a worker that got
  ahead (one restarted before the chief on running parameter servers) can
  give two. The optimizer's own state (accumulators, token queue, each worker's
  local step) is in no checkpoint, so cluster checkpoints are those of one
  machine.

  This hook replaces the optimizer's `make_session_run_hook`, whose ending
  does not suit a cluster that stops by itself:

  * No initial tokens: no worker runs ahead before the others have joined;
    the first step needs a batch from each of them.
  * At the end, the queue of tokens is not closed (a closed queue lives on in
    the parameter server and would end the next run at its first step) and
    no worker waits for another: each stops when it sees the last global
    step, and the chief leaves a token for each worker, so that one still
    waiting for a step (it joined late) finishes too; the chief removes
    stale tokens when it starts. Its update thread, blocked waiting for
    gradients no worker will send, is cancelled when its session closes.
  * A worker whose step did not complete within --cluster_timeout_secs (a
    worker down, or a restarted chief) calls `resynchronize` and sends
    another batch, so training goes on with the workers that are there; the
    trainer gives up when that does not help either (no chief).
  """

  def __init__(self, is_chief, num_workers, last_step):
    self._is_chief = is_chief
    self._num_workers = num_workers
    self._last_step = last_step
    self._optimizer = None
    self._session = None
    self._thread = None

  @property
  def optimizer(self):
    """The SyncReplicasOptimizer, once `wrap` made it."""
    return self._optimizer

  def wrap(self, optimizer, variable_averages, variables):
    """Wraps `optimizer`; the chief updates the averages once a step."""
    self._optimizer = _SyncReplicasOptimizer(
        optimizer, replicas_to_aggregate=self._num_workers,
        total_num_replicas=self._num_workers,
        variable_averages=variable_averages, variables_to_average=variables)
    return self._optimizer

  def begin(self):
    opt = self._optimizer
    self._global_step = tf.train.get_global_step()
    self._ready_op = opt.ready_for_local_init_op
    self._resync_op = opt.local_step_init_op
    if self._is_chief:
      self._init_op = opt.chief_init_op
      runner = opt.get_chief_queue_runner()
      self._update_op = runner.enqueue_ops[0]
      self._drain_op = runner.queue.dequeue_many(runner.queue.size())
      self._release_op = opt.get_init_tokens_op(self._num_workers)
    else:
      self._init_op = opt.local_step_init_op

  def after_create_session(self, session, coord):
    uninitialized = session.run(self._ready_op)
    if len(uninitialized):  # pylint: disable=g-explicit-length-test
      raise RuntimeError('variables not initialized for synchronous '
                         'training: %s' % ', '.join(
                             n.decode() for n in uninitialized))
    session.run(self._init_op)
    self._session = session
    if not self._is_chief:
      return
    try:
      # Tokens of an earlier run (of a worker that stopped before taking
      # them) would let a worker run ahead of the others.
      session.run(self._drain_op, options=tf.RunOptions(timeout_in_ms=10000))
    except tf.errors.DeadlineExceededError:
      pass  # A worker took one meanwhile: then nothing is left anyway.
    self._thread = threading.Thread(target=self._apply_updates,
                                    args=(session, coord),
                                    name='sync_replicas_updates', daemon=True)
    self._thread.start()

  def _apply_updates(self, session, coord):
    """The chief's update loop, until the session stops or fails."""
    while not coord.should_stop():
      try:
        session.run(self._update_op)
      except PS_LOST_ERRORS:
        # The chief's own step fails on the same ps, and reports it; on the
        # coordinator, the error would make the MonitoredSession close its
        # session, which then waits for the ps forever.
        return
      except Exception as e:  # pylint: disable=broad-except
        # Cancelled when the session closes; anything else stops training
        # and is reported by the session's close.
        if not coord.should_stop():
          coord.request_stop(e)
        return

  def resynchronize(self):
    """After a step timed out: the local step from the global one.

    Returns:
      The global step.
    """
    self._session.run(self._resync_op)
    return self._session.run(self._global_step)

  def end(self, session):
    if self._is_chief and session.run(self._global_step) >= self._last_step:
      session.run(self._release_op)

  def join(self, timeout_secs=30):
    """Waits for the chief's update thread after its session closed.

    Returns:
      False if the thread is still running.
    """
    if self._thread is not None:
      self._thread.join(timeout_secs)
      return not self._thread.is_alive()
    return True
