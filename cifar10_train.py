"""Trains the CIFAR-10 model on one device.

  python cifar10_train.py [--train_dir=/tmp/cifar10_train] [--max_steps=N]

Single-device training is the one-tower case of the tower trainer below;
cifar10_multi_gpu_train.py runs the same code with one tower per GPU. The
graph is built by `build_training_graph`:

  distorted_inputs -> (per tower) inference -> loss -> compute_gradients
                   -> average_gradients -> train

Training resumes from the newest checkpoint in --train_dir (global step,
learning-rate schedule and moving averages continue). It keeps the newest 5
checkpoints, as the original did, deleting older ones as it saves new ones;
nothing else is deleted unless --fresh is given. Ctrl-C or SIGTERM writes a
checkpoint before exiting; a NaN or infinite loss stops training without
saving it.

Given a cluster (--ps_hosts, --worker_hosts, --job_name, --task_index, or
TF_CONFIG), the process is one task of it: a parameter server, or a worker
that runs this same trainer with the variables on the parameter servers and,
by default, synchronous updates; worker 0 (the chief) owns --train_dir. See
cifar10_cluster.py.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import collections
import contextlib
import os
import signal
import time

import tensorflow.compat.v1 as tf

import cifar10
import cifar10_cli
import cifar10_cluster
import cifar10_download
import cifar10_input

FLAGS = tf.app.flags.FLAGS

tf.app.flags.DEFINE_string('train_dir', '/tmp/cifar10_train',
                           """Directory where to write event logs """
                           """and checkpoints.""")
tf.app.flags.DEFINE_integer('max_steps', 1000000,
                            """Global step at which training stops.""")
tf.app.flags.DEFINE_boolean('log_device_placement', False,
                            """Whether to log device placement.""")
tf.app.flags.DEFINE_integer('log_frequency', 10,
                            """How often to log results to the console.""")
tf.app.flags.DEFINE_boolean(
    'fresh', False,
    """Start over: remove the checkpoints and event files in --train_dir
    instead of resuming from them.""")
tf.app.flags.DEFINE_integer('save_checkpoint_secs', 600,
                            """Seconds between checkpoints.""")
tf.app.flags.DEFINE_integer(
    'save_checkpoint_steps', 0,
    """Steps between checkpoints; when set, replaces --save_checkpoint_secs.""")
tf.app.flags.DEFINE_integer('save_summaries_steps', 100,
                            """Steps between TensorBoard summaries.""")

for _name in ('batch_size', 'log_frequency', 'save_checkpoint_secs',
              'save_summaries_steps'):
  cifar10_cli.positive(_name)
for _name in ('max_steps', 'save_checkpoint_steps'):
  cifar10_cli.non_negative(_name)
cifar10_cli.checkpoint_directory('train_dir')

# What evaluation writes by default, for the TensorBoard command we print.
DEFAULT_EVAL_DIR = '/tmp/cifar10_eval'

# Files that training writes in --train_dir, and so --fresh may remove: the
# state file, the graph, event files and checkpoint files
# (cifar10_cli.CHECKPOINT_FILE; names that only start like one, such as
# 'model.ckpt-best.h5', stay).
_TRAINING_FILE_NAMES = ('checkpoint', 'graph.pbtxt')
_EVENT_FILE_PREFIX = 'events.out.tfevents.'

# Memory that training on the CPU takes per image of a step: the growth of
# peak resident memory with the batch size (TensorFlow 2.21, float32; about
# 1.04 MB per image between batches of 1,024 and 4,096).
CPU_TRAINING_BYTES_PER_IMAGE = 1e6

# Checkpoints the trainer keeps: tf.train.Saver's default max_to_keep, which
# MonitoredTrainingSession uses.
KEPT_CHECKPOINTS = 5

# The lock file a trainer holds in --train_dir (left there; see
# _lock_train_dir), and the open locks of this process, released at its exit.
TRAIN_DIR_LOCK = '.cifar10-train.lock'
_held_locks = []

TrainingGraph = collections.namedtuple(
    'TrainingGraph',
    ['train_op', 'loss', 'learning_rate', 'global_step', 'step_after',
     'examples_per_step'])


class TrainingDivergedError(ValueError):
  """The loss became NaN or infinite."""


def tower_devices(num_towers):
  """One device per tower: GPUs where there are, else the CPU.

  Args:
    num_towers: number of model replicas.

  Returns:
    List of device strings.

  Raises:
    cifar10_cli.UsageError: if GPUs exist but fewer than `num_towers`, or
      the towers' batches on the CPU cannot fit in this machine's memory.
  """
  gpus = len(tf.config.list_physical_devices('GPU'))
  if not gpus:
    # Else TensorFlow's allocator runs the machine out of memory, and the
    # process dies of a segmentation fault minutes later.
    images = FLAGS.batch_size * num_towers
    needed = images * CPU_TRAINING_BYTES_PER_IMAGE
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    if needed > memory:
      raise cifar10_cli.UsageError(
          '--batch_size=%d x %d tower(s) needs about %.0f GB of memory to '
          'train on the CPU (about %.0f MB per image); this machine has %.0f '
          'GB' % (FLAGS.batch_size, num_towers, needed / 1e9,
                  CPU_TRAINING_BYTES_PER_IMAGE / 1e6, memory / 1e9))
    return ['/cpu:0'] * num_towers
  if num_towers > gpus:
    raise cifar10_cli.UsageError(
        '--num_gpus=%d but this machine has %d GPU(s)' % (num_towers, gpus))
  return ['/gpu:%d' % i for i in range(num_towers)]


def build_training_graph(devices, data_dir, batch_size, replicas=1,
                         wrap_optimizer=None, timed_steps=False):
  """Builds the training step with one tower per device, in the default graph.

  One input pipeline reads `batch_size * len(devices)` images per step and
  splits them among the towers (see `build_towers`).

  Args:
    devices: list of device strings, one per tower.
    data_dir: directory with the `.bin` files.
    batch_size: images per tower.
    replicas: workers whose batches one global step aggregates (for the
      learning-rate schedule in synchronous cluster training).
    wrap_optimizer: see `cifar10.train`; None for plain gradient descent.
    timed_steps: whether steps run with a timeout, which may cancel them.

  Returns:
    A TrainingGraph.
  """
  with tf.device('/cpu:0'):
    images, labels = cifar10_input.distorted_inputs(
        data_dir, batch_size * len(devices), queue_batches=timed_steps)
  return build_towers(images, labels, devices, replicas, wrap_optimizer)


def build_towers(images, labels, devices, replicas=1, wrap_optimizer=None):
  """The training step on a batch split among towers, one per device.

  The towers share one set of variables (on the CPU) and their gradients are
  averaged, so a step with N towers of batch B updates the weights as one
  tower with batch N*B would.

  Args:
    images: float32 [N * B, IMAGE_SIZE, IMAGE_SIZE, 3] for N devices.
    labels: int32 [N * B].
    devices: list of device strings, one per tower.
    replicas: workers whose batches one global step aggregates.
    wrap_optimizer: see `cifar10.train`; None for plain gradient descent.

  Returns:
    A TrainingGraph: the train op, the loss averaged over the towers, the
    learning rate, the global step, the global step read after the train op,
    and the images one step consumes.
  """
  with tf.device('/cpu:0'):  # With the other variables.
    global_step = tf.train.get_or_create_global_step()
  tower_images = tf.split(images, len(devices))
  tower_labels = tf.split(labels, len(devices))
  tower_grads = []
  tower_losses = []
  with tf.variable_scope(tf.get_variable_scope()):
    for i, device in enumerate(devices):
      with tf.device(device), tf.name_scope('%s_%d' % (cifar10.TOWER_NAME,
                                                        i)) as scope:
        total_loss = cifar10.tower_loss(scope, tower_images[i],
                                        tower_labels[i])
        # The next tower reuses this tower's variables.
        tf.get_variable_scope().reuse_variables()
        tower_grads.append(cifar10.compute_gradients(total_loss))
        tower_losses.append(total_loss)
  examples_per_step = images.shape.as_list()[0] * replicas
  train_op = cifar10.train(
      tower_losses[-1], global_step,
      grads_and_vars=cifar10.average_gradients(tower_grads),
      examples_per_step=examples_per_step, total_losses=tower_losses,
      wrap_optimizer=wrap_optimizer)
  loss = tf.add_n(tower_losses) / len(tower_losses)
  with tf.control_dependencies([train_op]):
    step_after = tf.identity(global_step)
  lr = cifar10.learning_rate(global_step, examples_per_step)
  return TrainingGraph(train_op, loss, lr, global_step, step_after,
                       examples_per_step)


def format_step(step, loss_value, examples_per_sec, sec_per_batch,
                cluster_examples_per_sec=None):
  """The tutorial's progress line (without the timestamp).

  On a cluster, `examples_per_sec` and `sec_per_batch` are this worker's,
  and `cluster_examples_per_sec` the whole cluster's (global steps per
  second times the images of a global step).
  """
  cluster = ('; cluster %.1f examples/sec' % cluster_examples_per_sec
             if cluster_examples_per_sec is not None else '')
  return ('step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch%s)'
          % (step, loss_value, examples_per_sec, sec_per_batch, cluster))


class _TrainingMonitorHook(tf.train.SessionRunHook):
  """Logs progress, stops on a NaN loss and on SIGINT or SIGTERM.

  A line is logged each time the global step passes a multiple of
  --log_frequency: on a cluster, a worker does not see every global step.

  Args:
    graph: the TrainingGraph.
    log_frequency: steps between log lines.
    replicas: on a cluster, the workers whose batches one global step
      aggregates (1 in asynchronous training): the line then gives this
      worker's figures and the cluster's. None on one machine.
    chief: whether this process writes the checkpoints.
    last_step: stop once the global step after a step reaches it. On one
      machine StopAtStepHook does that; in asynchronous cluster training
      its estimate lags behind the other workers' steps.
  """

  def __init__(self, graph, log_frequency, replicas=None, chief=True,
               last_step=None):
    self._graph = graph
    self._log_frequency = log_frequency
    self._replicas = replicas
    self._chief = chief
    self._stop_at_step = last_step
    self._last_time = None
    self._last_step = None
    self._last_runs = 0
    self._runs = 0
    self._last_finite = None
    self.step = None
    self.start_step = 0
    self.stop_signal = None

  def begin(self):
    for signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(signum, self._on_signal)

  def after_create_session(self, session, coord):
    # A worker that joins a cluster whose training is over has no step to
    # run: its first step would wait for a global step that never comes.
    self.start_step, self._learning_rate = session.run(
        [self._graph.global_step, self._graph.learning_rate])

  def _on_signal(self, signum, unused_frame):
    self.stop_signal = signum
    cifar10_cli.log('%s received: %sexiting (send it again to exit at once)'
                    % (signal.Signals(signum).name,
                       'saving a checkpoint, then ' if self._chief else ''))
    # A second signal interrupts at once, the default behaviour.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

  def diverged(self):
    """The error for a step that failed on a NaN or infinite loss.

    The step's update was not applied (see cifar10.train), and training stops
    without saving.
    """
    if self._last_finite:
      step = self._last_finite[1] + 1
      last = 'last finite loss %.4f at step %d' % self._last_finite
    else:
      step = self.start_step + 1
      last = 'no finite loss before'
    return TrainingDivergedError(
        'loss or gradients not finite at step %d (learning rate %g; %s); '
        'training stopped without saving this state'
        % (step, self._learning_rate, last))

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(
        [self._graph.step_after, self._graph.loss, self._graph.learning_rate])

  def after_run(self, run_context, run_values):
    # A step with a NaN or infinite loss fails before it gets here (see
    # diverged): every loss seen here is finite.
    step, loss_value, self._learning_rate = run_values.results
    self.step = step
    self._last_finite = (loss_value, step)
    self._runs += 1
    now = time.time()
    if self._last_time is None:
      # The first step includes graph optimization; time from its end.
      self._last_time, self._last_step = now, step
      self._last_runs = self._runs
      cifar10_cli.log('first step (step %d) done %.2f s after the process '
                      'started' % (step, cifar10_cli.seconds_since_start()))
    elif (step // self._log_frequency >
          self._last_step // self._log_frequency):
      elapsed = now - self._last_time
      # This process's batches; on one machine, one per global step.
      sec_per_batch = elapsed / (self._runs - self._last_runs)
      batch = self._graph.examples_per_step / (self._replicas or 1)
      cluster_rate = None
      if self._replicas is not None:
        cluster_rate = ((step - self._last_step) *
                        self._graph.examples_per_step / elapsed)
      cifar10_cli.log(format_step(step, loss_value, batch / sec_per_batch,
                                  sec_per_batch, cluster_rate))
      self._last_time, self._last_step = now, step
      self._last_runs = self._runs
    if self.stop_signal is not None or (
        self._stop_at_step is not None and
        step >= self._stop_at_step):
      run_context.request_stop()


def _lock_train_dir(train_dir):
  """Takes a lock that keeps other trainers out of `train_dir` until this
  process exits: two would overwrite each other's checkpoints, and the
  second one's --fresh would delete the first one's.

  Raises:
    cifar10_cli.UsageError: if another process holds it.
  """
  path = os.path.join(train_dir, TRAIN_DIR_LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

  def refuse():
    raise cifar10_cli.UsageError(
        '--train_dir=%s is in use by another trainer (it holds %s): stop '
        'it, or train into another directory' % (train_dir, path))

  try:
    held = cifar10_download.lock(
        fd, path, refuse,
        'do not start two trainers on --train_dir=%s' % train_dir)
  except BaseException:
    os.close(fd)
    raise
  if held:
    _held_locks.append(fd)
  else:
    os.close(fd)


def claim_train_dir(train_dir):
  """Creates --train_dir, checks it is writable, and locks it.

  Raises:
    cifar10_cli.UsageError: if the directory cannot be written or another
      trainer uses it.
  """
  cifar10_cli.make_output_dir('train_dir', train_dir)
  _lock_train_dir(train_dir)


def prepare_train_dir(train_dir, fresh):
  """Applies --fresh to the claimed --train_dir (see `claim_train_dir`).

  Returns:
    The newest checkpoint to resume from (see `_checkpoint_to_resume`), or
    None.

  Raises:
    cifar10_cli.UsageError: if its state file names checkpoints elsewhere
      only.
  """
  if fresh:
    names = sorted(
        n for n in tf.io.gfile.listdir(train_dir)
        if (n in _TRAINING_FILE_NAMES or n.startswith(_EVENT_FILE_PREFIX) or
            cifar10_cli.CHECKPOINT_FILE.match(n))
        and not tf.io.gfile.isdir(os.path.join(train_dir, n)))
    cifar10_cli.log('--fresh: removing %d file(s) from %s%s'
                    % (len(names), train_dir,
                       ': ' + ', '.join(names) if names else ''))
    for name in names:
      tf.io.gfile.remove(os.path.join(train_dir, name))
  return _checkpoint_to_resume(train_dir)


def _checkpoint_to_resume(train_dir):
  """The newest checkpoint in `train_dir`, whose state file is made to list
  this directory's checkpoints.

  TensorFlow's state file ('checkpoint') holds the paths it was given,
  absolute ones too. In a copied directory these name the original's
  checkpoints: training would resume from them and, keeping the newest five,
  delete the older ones there. In a moved directory they name files that are
  gone, and when the file is missing or damaged it names nothing: training
  would start over at step 0 and overwrite the checkpoints here as it went.
  In these cases the file is written again, listing the newest five of this
  directory's checkpoints (`cifar10_cli.listed_checkpoints`) by name; older
  ones stay unlisted, so rotation leaves them alone.

  Raises:
    cifar10_cli.UsageError: if there are no checkpoints here but the state
      file names some (in other directories, or gone) or is damaged.
  """
  state_file = os.path.join(train_dir, 'checkpoint')
  state = cifar10_cli.checkpoint_state(train_dir)
  named = ([state.model_checkpoint_path] +
           list(state.all_model_checkpoint_paths)) if state else []
  here = os.path.realpath(train_dir)
  elsewhere = sorted({os.path.dirname(os.path.realpath(path))
                      for path in named
                      if tf.io.gfile.exists(path + '.index')} - {here})
  checkpoint = tf.train.latest_checkpoint(train_dir) if state else None
  listed = cifar10_cli.listed_checkpoints(train_dir)
  if not listed:
    if state is None and tf.io.gfile.exists(state_file):
      # MonitoredTrainingSession would read it again, and fail if it is not
      # text; and it may not be TensorFlow's.
      raise cifar10_cli.UsageError(
          '%s is not a checkpoint state file, and --train_dir=%s holds no '
          'checkpoint: move it away to start over' % (state_file, train_dir))
    if elsewhere:
      raise cifar10_cli.UsageError(
          '%s names checkpoints in %s, none in --train_dir=%s: training '
          'would delete them as it rotated its own; copy them into '
          '--train_dir, or start over with --fresh'
          % (state_file, elsewhere[0], train_dir))
    if any(named):
      # TensorFlow would try to restore it, and fail.
      raise cifar10_cli.UsageError(
          '%s names %s, which is gone, and --train_dir=%s holds no '
          'checkpoint: remove %s to start over' % (
              state_file, state.model_checkpoint_path, train_dir, state_file))
    return None
  if checkpoint is not None and not elsewhere:
    return checkpoint
  cifar10_cli.log(
      '%s does not name the checkpoints in %s (it is %s): rewriting it to '
      'list the newest %d there' % (
          state_file, train_dir,
          'from the directory this one was copied or moved from, %s'
          % elsewhere[0] if elsewhere else 'missing, damaged or stale',
          len(listed[-KEPT_CHECKPOINTS:])))
  # The state file's text format, as TensorFlow writes it.
  names = [os.path.basename(path) for path in listed[-KEPT_CHECKPOINTS:]]
  cifar10_cli.write_atomically(state_file, 'model_checkpoint_path: "%s"\n%s'
                               % (names[-1], ''.join(
                                   'all_model_checkpoint_paths: "%s"\n' % name
                                   for name in names)))
  return listed[-1]


def _log_plan(devices, data_dir, checkpoint, start_step, task,
              examples_per_step, sync):
  """Logs what training will do.

  Args:
    devices: one device string per tower.
    data_dir: directory with the `.bin` files.
    checkpoint: the checkpoint training resumes from, or None.
    start_step: its global step (0 without).
    task: the cluster task, or None on one machine.
    examples_per_step: the images of a global step.
    sync: whether this is synchronous cluster training.
  """
  chief = task is None or task.is_chief
  cifar10_cli.log('data: %s' % data_dir)
  if chief:
    cifar10_cli.log('train_dir: %s, %s' % (
        FLAGS.train_dir, 'resuming from %s (step %d)' % (
            checkpoint, start_step)
        if checkpoint else 'starting fresh at step 0'))
  else:
    cifar10_cli.log('checkpoints and summaries: written by the chief '
                    '(worker 0)')
  cifar10_cli.log('batch size %d x %d tower(s) on %s%s, to step %d' % (
      FLAGS.batch_size, len(devices), ', '.join(devices),
      ' (mixed precision: %s)' % cifar10.compute_dtype().name
      if FLAGS.use_fp16 else '', FLAGS.max_steps))
  if task and sync:
    cifar10_cli.log('synchronous training: each global step averages %d '
                    'batches, normally one from each worker (%d images)'
                    % (task.num_workers, examples_per_step))
  elif task:
    cifar10_cli.log('asynchronous training: each worker applies its own '
                    'gradients; a global step is one batch of one worker')
  if chief:
    # The schedule counts global steps of this run's size: where a
    # checkpoint of another global batch size resumes in it shows here.
    interval = cifar10.decay_steps(examples_per_step)
    cifar10_cli.log(
        'learning rate %g at step %d, x%g every %d steps (%g epochs of %d '
        'images per step)' % (
            cifar10.INITIAL_LEARNING_RATE *
            cifar10.LEARNING_RATE_DECAY_FACTOR ** (start_step // interval),
            start_step, cifar10.LEARNING_RATE_DECAY_FACTOR, interval,
            cifar10.NUM_EPOCHS_PER_DECAY, examples_per_step))
    cifar10_cli.log('watch: %s' % cifar10_cli.tensorboard_hint(
        FLAGS.train_dir, DEFAULT_EVAL_DIR))


def tower_session_config(devices):
  """The training session's options, for towers on `devices`.

  On CPUs, Grappler's graph optimization runs one pass instead of two: over
  the training graph the second pass only merges 9 of its 493 nodes, and
  takes about 65 ms of the first step (PERFORMANCE.md). Towers on GPUs, whose
  graphs the layout pass rewrites, keep TensorFlow's default (not
  measured).
  """
  config = cifar10_cli.session_config(
      log_device_placement=FLAGS.log_device_placement)
  if not any('gpu' in device.lower() for device in devices):
    rewrites = config.graph_options.rewrite_options
    rewrites.meta_optimizer_iterations = rewrites.ONE
  return config


def _nothing_to_do(checkpoint, step):
  """Whether `step`, that of `checkpoint`, is at --max_steps already; if so,
  says so."""
  if step < FLAGS.max_steps:
    return False
  cifar10_cli.log('%s is already at step %d, --max_steps=%d: nothing to do'
                  % (checkpoint, step, FLAGS.max_steps))
  return True


def train(devices, task=None):
  """Trains to --max_steps, resuming from --train_dir.

  On a cluster this is one worker's part (see cifar10_cluster.py): the same
  graph, with the variables on the parameter servers and, in synchronous
  training, the optimizer wrapped in a SyncReplicasOptimizer. Only the chief
  (worker 0) reads and writes --train_dir.

  The data set is downloaded if need be (see
  `cifar10.maybe_download_and_extract`) and checked before --train_dir is
  touched, so that a bad one changes nothing there, and on a cluster the
  parameter servers are waited for before --fresh is applied; on one
  machine, a --train_dir already at --max_steps needs no data set.

  Args:
    devices: one device string per tower.
    task: this worker's cifar10_cluster.Task; None on one machine.

  Returns:
    Exit status: 0, or 128 + the signal that stopped training.
  """
  chief = task is None or task.is_chief
  if task is None and not FLAGS.fresh and tf.io.gfile.isdir(FLAGS.train_dir):
    # Read only: nothing is locked or rewritten before the data is checked.
    saved = cifar10_cli.listed_checkpoints(FLAGS.train_dir)
    if saved and _nothing_to_do(saved[-1],
                                cifar10_cli.checkpoint_step(saved[-1])):
      return 0
  data_dir = cifar10.maybe_download_and_extract()
  if chief:
    claim_train_dir(FLAGS.train_dir)
  server = None
  if task:
    # A chief that gives up on them has not applied --fresh.
    server = cifar10_cluster.start_server(task)
    cifar10_cluster.wait_for_ps(task, server, FLAGS.cluster_timeout_secs)
  checkpoint, start_step = None, 0
  if chief:
    checkpoint = prepare_train_dir(FLAGS.train_dir, FLAGS.fresh)
    start_step = cifar10_cli.checkpoint_step(checkpoint) if checkpoint else 0
  elif FLAGS.fresh:
    cifar10_cli.log('--fresh: ignored; only the chief (worker 0) removes '
                    'files, from its --train_dir')
  finished = chief and _nothing_to_do(checkpoint or FLAGS.train_dir,
                                      start_step)
  if finished and (task is None or checkpoint is None):
    return 0

  with tf.Graph().as_default():
    sync = None
    replicas = 1
    if task and FLAGS.sync_replicas:
      sync = cifar10_cluster.SyncReplicasHook(chief, task.num_workers,
                                              FLAGS.max_steps)
      replicas = task.num_workers
    placement = (tf.device(cifar10_cluster.device_setter(task)) if task
                 else contextlib.nullcontext())
    with placement:
      graph = build_training_graph(devices, data_dir, FLAGS.batch_size,
                                   replicas, sync.wrap if sync else None,
                                   timed_steps=sync is not None)
    if checkpoint:
      cifar10_cli.check_checkpoint(
          checkpoint, {v.op.name: v for v in tf.global_variables()})
    if not finished:
      _log_plan(devices, data_dir, checkpoint, start_step, task,
                graph.examples_per_step, sync is not None)

    config = tower_session_config(devices)
    if task:
      cifar10_cluster.session_config(task, config)
    if finished:
      cifar10_cluster.publish_checkpoint(server.target, config, checkpoint)
      cifar10_cli.log('restored %s onto the parameter servers, for the other '
                      'workers to see' % checkpoint)
      return 0

    monitor = _TrainingMonitorHook(graph, FLAGS.log_frequency,
                                   replicas if task else None, chief,
                                   FLAGS.max_steps if task else None)
    hooks = [tf.train.StopAtStepHook(last_step=FLAGS.max_steps), monitor]
    if sync:
      hooks.append(sync)
    if chief:
      steps = FLAGS.save_checkpoint_steps or None
      session = tf.train.MonitoredTrainingSession(
          master=server.target if server else '',
          checkpoint_dir=FLAGS.train_dir,
          hooks=hooks,
          save_checkpoint_secs=None if steps else FLAGS.save_checkpoint_secs,
          save_checkpoint_steps=steps,
          save_summaries_steps=FLAGS.save_summaries_steps,
          # The tutorial's global_step/sec chart in TensorBoard.
          log_step_count_steps=FLAGS.save_summaries_steps,
          config=config)
    else:
      session = tf.train.MonitoredSession(
          session_creator=cifar10_cluster.WorkerSessionCreator(
              server.target, config, FLAGS.cluster_timeout_secs,
              lambda: monitor.stop_signal),
          hooks=hooks)
    # A synchronous step waits for every worker's batch; after
    # --cluster_timeout_secs the worker sends another (SyncReplicasHook).
    options = (tf.RunOptions(timeout_in_ms=1000 * FLAGS.cluster_timeout_secs)
               if sync else None)

    def step_fn(step_context):
      with cifar10_cluster.exit_on_lost_ps(task):
        return step_context.run_with_hooks(graph.train_op, options=options)

    stalled_at = None
    with session as sess:
      if task:
        cifar10_cli.log('joined at global step %d' % monitor.start_step)
      while not sess.should_stop() and monitor.start_step < FLAGS.max_steps:
        try:
          # A step function: its errors reach us before the MonitoredSession
          # would act on them (see cifar10_cluster.exit_on_lost_ps).
          sess.run_step_fn(step_fn)
        except tf.errors.InvalidArgumentError as e:
          if cifar10.NON_FINITE_LOSS not in e.message:
            raise
          raise monitor.diverged()
        except tf.errors.DeadlineExceededError:
          if sync is None:
            raise
          if monitor.stop_signal is not None:
            break  # Signalled while the step waited: stop, not resend.
          with cifar10_cluster.exit_on_lost_ps(task):
            step = sync.resynchronize()
          if step >= FLAGS.max_steps:
            monitor.step = step  # Others finished it: the step to report.
            break
          if step == stalled_at:
            # Not even another batch helped: nobody applies the updates.
            raise tf.errors.DeadlineExceededError(
                None, None, 'no global step for %d s (2 x '
                '--cluster_timeout_secs): is the chief (worker 0) running?'
                % (2 * FLAGS.cluster_timeout_secs))
          stalled_at = step
          cifar10_cli.log('no global step for %d s (a worker down?): sending '
                          'another batch' % FLAGS.cluster_timeout_secs)
    if sync and not sync.join():
      cifar10_cli.log('the synchronous update thread did not stop; exiting '
                      'without it')
  step = monitor.step if monitor.step is not None else monitor.start_step
  saved = ('checkpoint saved in %s' % FLAGS.train_dir if chief
           else 'checkpoints are the chief\'s')
  if monitor.stop_signal is not None:
    cifar10_cli.log('stopped at step %d; %s' % (step, saved))
    return 128 + monitor.stop_signal
  cifar10_cli.log('done: step %d, %s (peak memory %.0f MB)'
                  % (step, saved, cifar10_cli.peak_memory_mb()))
  return 0


def start_task():
  """This process's task in a cluster, announced in the log.

  Returns:
    A cifar10_cluster.Task, or None to train on this machine alone.

  Raises:
    cifar10_cli.UsageError: if the cluster flags or TF_CONFIG are invalid.
  """
  task = cifar10_cluster.task_from_flags(os.environ)
  if task:
    cifar10_cli.set_log_prefix(task.name + ': ')
    cifar10_cli.log(task.describe())
  return task


def main(argv=None):  # pylint: disable=unused-argument
  task = start_task()
  if task and task.job_name == 'ps':
    return cifar10_cluster.serve(task)
  devices = tower_devices(1)  # Checked before a download.
  return train(devices, task)


if __name__ == '__main__':
  cifar10_cli.run(main)
