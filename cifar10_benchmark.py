"""Measures the suite's speed on this machine, in one run.

  python cifar10_benchmark.py [--json=FILE] [--rounds=2] [--steps=60]

Writes a data set of the official size in the CIFAR-10 format (random
pixels, nothing is downloaded) into a temporary directory, then measures:

  * training examples/sec of cifar10_train.py (one tower) and of
    cifar10_multi_gpu_train.py --num_gpus=1, float32, at --batch_size: the
    median over --steps steps after --warmup steps, with the spread, from the
    scripts' own per-step log lines (--log_frequency=1);
  * the same for cifar10_train.py with --use_fp16 (mixed precision);
  * seconds from process start to the end of the first training step;
  * peak resident memory of each training process;
  * the float32 matrix-multiply rate of this machine (2048x2048 matmuls in
    graph mode), the median of one measurement per round, and the ratio
      examples/sec x FLOPS_PER_TRAINING_EXAMPLE / matmul FLOP/s;
  * the input pipeline alone, in images/sec, and its ratio to training;
  * evaluation images/sec over 10,000 images, from one cifar10_eval.py per
    round watching a directory: its first evaluation (what --run_once
    measures) and the next --later_checkpoints, of checkpoints written one
    after another as a trainer would; the median of the first evaluations
    and of the later ones, and of their first batches' time (a session's
    first batch also pays its set-up).

Each training configuration, the matmul rate and the evaluation run
--rounds times, interleaved, so that a slow moment of a noisy machine does
not land on one figure only. --smoke runs everything on tiny data, with
few steps and one round, in under a minute (what CI checks).

  python cifar10_benchmark.py --profile [--use_fp16]

instead shows where a training step's time goes: the median over --steps
traced steps (after --warmup) of the time of each op type and of each op,
from TensorFlow's step stats, with ops run one at a time so that their times
add up to the step. It prints the slowest of each; --json has them all.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow.compat.v1 as tf

import cifar10  # pylint: disable=unused-import  (defines --batch_size)
import cifar10_cli
import cifar10_input
import cifar10_train

FLAGS = tf.app.flags.FLAGS

tf.app.flags.DEFINE_string('json', '', """Also write the figures to this file.""")
tf.app.flags.DEFINE_integer('rounds', 2,
                            """Runs of each training configuration.""")
tf.app.flags.DEFINE_integer('steps', 60, """Measured steps per run.""")
tf.app.flags.DEFINE_integer('warmup', 10, """Steps before measuring.""")
tf.app.flags.DEFINE_integer(
    'later_checkpoints', 3,
    """Checkpoints each round's evaluator evaluates after its first.""")
tf.app.flags.DEFINE_boolean('smoke', False,
                            """Tiny data and few steps: checks that the """
                            """benchmark works, measures nothing useful.""")
tf.app.flags.DEFINE_boolean(
    'profile', False,
    """Instead of the figures, where a training step's time goes, by op """
    """type and by op (with --use_fp16: the mixed-precision step).""")
for _name in ('rounds', 'steps', 'warmup', 'later_checkpoints'):
  cifar10_cli.positive(_name)
# The trainers' flags it takes, listed by --help with its own.
for _name in ('batch_size', 'use_fp16'):
  tf.app.flags.declare_key_flag(_name)
# The trainer runs both, as its --max_steps.
tf.app.flags.register_multi_flags_validator(
    ['steps', 'warmup'],
    lambda values: values['steps'] + values['warmup'] <=
    cifar10_cli.MAX_FLAG_INT,
    message='--warmup + --steps must be at most %d' % cifar10_cli.MAX_FLAG_INT)

# Multiply-adds of one forward pass: conv1 24*24*64*(5*5*3), conv2
# 12*12*64*(5*5*64), local3 2304*384, local4 384*192, softmax_linear 192*10.
FORWARD_MACS = (24 * 24 * 64 * 75 + 12 * 12 * 64 * 1600 + 2304 * 384 +
                384 * 192 + 192 * 10)
# A training step does each layer's multiply-adds three times (forward,
# gradient of the weights, gradient of the input), except that no gradient
# flows into the images; 2 FLOPs per multiply-add. Pooling, LRN, ReLU and
# the optimizer are not counted. About 105.3 MFLOP.
FLOPS_PER_TRAINING_EXAMPLE = 2 * (3 * FORWARD_MACS - 24 * 24 * 64 * 75)

_STEP = re.compile(r': step (\d+), loss = [\d.naif]+ \(([\d.]+) examples/sec')
_FIRST_STEP = re.compile(r'first step \(step \d+\) done ([\d.]+) s after')
_EVAL = re.compile(r'evaluated (\d+) images in [\d.]+ s \((\d+) images/sec; '
                   r'first batch (\d+) ms\)')
_PEAK = re.compile(r'peak memory ([\d.]+) MB')
_HERE = os.path.dirname(os.path.abspath(__file__))


def machine():
  """A one-line description of this machine."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = re.findall(r'^model name\s*:\s*(.+)$', f.read(), re.M)
    cpu = names[0] if names else cpu
  except OSError:
    pass
  flags = ''
  try:
    with open('/proc/cpuinfo') as f:
      words = set(f.read().split())
    flags = ', '.join(w for w in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16')
                      if w in words)
  except OSError:
    pass
  gpus = tf.config.list_physical_devices('GPU')
  return '%s, %d cores (%s)%s; TensorFlow %s; Python %s' % (
      cpu, os.cpu_count(), flags or 'no AVX flags found',
      '; %d GPU(s)' % len(gpus) if gpus else '; no GPU', tf.__version__,
      platform.python_version())


def write_data(batches_dir, per_file, test_records):
  """CIFAR-10 files of random pixels with the official layout."""
  os.makedirs(batches_dir)
  rng = np.random.RandomState(0)
  for name, count in ([(n, per_file) for n in cifar10_input.TRAIN_FILES] +
                      [(n, test_records) for n in cifar10_input.EVAL_FILES]):
    records = rng.randint(0, 256, size=(count, cifar10_input.RECORD_BYTES),
                          dtype=np.uint8)
    records[:, 0] %= cifar10_input.NUM_CLASSES
    records.tofile(os.path.join(batches_dir, name))


def _session(**options):
  """A session that takes GPU memory as needed: this process lives through
  the whole benchmark, next to the trainers and evaluators it starts."""
  return tf.Session(config=cifar10_cli.session_config(**options))


def matmul_flops(size, runs):
  """Float32 FLOP/s of size x size matrix products in graph mode (median)."""
  with tf.Graph().as_default():
    a = tf.Variable(tf.random.normal([size, size]))
    b = tf.Variable(tf.random.normal([size, size]))
    # The sum keeps the result in the graph without copying it out.
    product = tf.reduce_sum(tf.matmul(a, b))
    with _session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(product)
      times = []
      for _ in range(runs):
        start = time.time()
        sess.run(product)
        times.append(time.time() - start)
  return 2 * size ** 3 / np.median(times)


def pipeline_rate(batches_dir, batch_size, batches):
  """Images/sec of `distorted_inputs` alone, over `batches` batches.

  Total time, not a median per batch: with parallel preprocessing and
  prefetching, batches arrive in bursts, and the median call time then says
  little about throughput.
  """
  with tf.Graph().as_default():
    images, _ = cifar10_input.distorted_inputs(batches_dir, batch_size)
    with _session() as sess:
      for _ in range(5):
        sess.run(images.op)
      start = time.time()
      for _ in range(batches):
        sess.run(images.op)
      return batches * batch_size / (time.time() - start)


def profile_step(batches_dir, steps, warmup):
  """Where a training step of one tower, built in this process, spends its
  time.

  Returns:
    (median traced step in ms, {op type: median ms per step},
    {op name: median ms per step}).
  """
  with tf.Graph().as_default():
    graph = cifar10_train.build_training_graph(
        cifar10_train.tower_devices(1), batches_dir, FLAGS.batch_size)
    # One op at a time: the op times then add up to the step's.
    with _session(inter_op_parallelism_threads=1) as sess:
      sess.run([tf.global_variables_initializer(),
                tf.local_variables_initializer()])
      for _ in range(warmup):
        sess.run(graph.train_op)
      walls, by_type, by_name = [], {}, {}
      for step in range(steps):
        metadata = tf.RunMetadata()
        start = time.time()
        sess.run(graph.train_op, run_metadata=metadata, options=tf.RunOptions(
            trace_level=tf.RunOptions.FULL_TRACE))
        walls.append(time.time() - start)
        for device in metadata.step_stats.dev_stats:
          for node in device.node_stats:
            # The label reads 'name = OpType(inputs)'.
            op_type = node.timeline_label.partition(' = ')[2].partition(
                '(')[0] or node.node_name
            for totals, key in ((by_type, op_type),
                                (by_name, node.node_name)):
              totals.setdefault(key, [0.0] * steps)[step] += (
                  node.all_end_rel_micros / 1000)
  medians = lambda totals: {k: float(np.median(v)) for k, v in totals.items()}
  return 1000 * float(np.median(walls)), medians(by_type), medians(by_name)


def print_profile(wall_ms, by_type, by_name, top=15):
  """The profile as two readable tables."""
  print('traced training step: %.1f ms (median), %s, batch size %d' % (
      wall_ms, 'mixed precision' if FLAGS.use_fp16 else 'float32',
      FLAGS.batch_size))
  for title, totals in (('op type', by_type), ('op', by_name)):
    print('\n%-70s  ms/step' % ('slowest by ' + title))
    for key, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
      print('%-70s  %7.2f' % (key[-70:], ms))
  sys.stdout.flush()


def _environment():
  """The environment of the suite's scripts run here."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  # These runs are single-machine measurements, whatever cluster the
  # environment describes.
  env.pop('TF_CONFIG', None)
  return env


def _check_exit(args, returncode, stderr):
  """Raises ValueError, in one line, if the script `args` failed."""
  if returncode < 0:
    # Killed: the last lines are a crash dump, not a message.
    raise ValueError('%s was killed by %s%s' % (
        ' '.join(args), signal.Signals(-returncode).name,
        ' (out of memory?)' if -returncode in (signal.SIGKILL,
                                               signal.SIGSEGV) else ''))
  if returncode:
    last = (stderr.strip().splitlines() or ['no output'])[-1]
    raise ValueError('%s exited %d: %s' % (' '.join(args), returncode, last))


def run_script(args):
  """Runs a script of the suite to the end; returns its stdout."""
  proc = subprocess.run([sys.executable] + args, capture_output=True,
                        env=_environment(), text=True, cwd=_HERE)
  _check_exit(args, proc.returncode, proc.stderr)
  return proc.stdout


def train_once(script, data_dir, train_dir, steps, extra):
  """Trains `steps` steps from scratch.

  Returns:
    (per-step examples/sec, seconds from process start to the end of the
    first step, peak resident memory in MB), from the script's own log.
  """
  shutil.rmtree(train_dir, ignore_errors=True)
  out = run_script([
      script, '--data_dir=%s' % data_dir, '--train_dir=%s' % train_dir,
      '--batch_size=%d' % FLAGS.batch_size, '--max_steps=%d' % steps,
      '--log_frequency=1', '--save_checkpoint_secs=3600'] + extra)
  # One rate per step from step 2: the first step starts the clock.
  rates = [float(r) for _, r in _STEP.findall(out)]
  return (rates, float(_FIRST_STEP.search(out).group(1)),
          float(_PEAK.search(out).group(1)))


@contextlib.contextmanager
def _signals_held():
  """Holds SIGINT and SIGTERM back while the block runs, then delivers them.

  For starting a child that must be stopped: a signal that came while
  subprocess.Popen ran, after the child started, would raise out of it and
  leave the child with no one to stop it.
  """
  held = []
  try:
    # Each handler is put back even if a signal raises out of the first
    # one put back, or comes before the second is replaced.
    with contextlib.ExitStack() as put_back:
      for signum in (signal.SIGINT, signal.SIGTERM):
        put_back.callback(signal.signal, signum, signal.signal(
            signum, lambda got, _: held.append(got)))
      yield
  finally:
    for signum in held:
      signal.raise_signal(signum)


def evaluate_watching(data_dir, train_dir, work, examples, later):
  """One cifar10_eval.py watching a directory, as next to a trainer.

  It finds the newest checkpoint of `train_dir`; each time it has evaluated
  one, the next appears (a copy under the next step: the same work), `later`
  times.

  Returns:
    (images evaluated, [images/sec of each evaluation, the first first],
    [ms of each evaluation's first batch]), from the script's own log.
  """
  source = cifar10_cli.latest_checkpoint(train_dir)
  step = cifar10_cli.checkpoint_step(source)
  checkpoint_dir = os.path.join(work, 'eval_checkpoints')
  shutil.rmtree(checkpoint_dir, ignore_errors=True)
  os.makedirs(checkpoint_dir)

  def publish(index):
    # Each file copied whole under a name the evaluator ignores, then
    # renamed; the index file last: with it, the checkpoint is complete.
    target = os.path.join(checkpoint_dir, 'model.ckpt-%d' % (step + index))
    partial = os.path.join(checkpoint_dir, 'copying')
    for path in sorted(tf.io.gfile.glob(source + '.*'),
                       key=lambda p: p.endswith('.index')):
      shutil.copy(path, partial)
      os.replace(partial, target + path[len(source):])

  publish(0)
  args = ['cifar10_eval.py', '--data_dir=%s' % data_dir,
          '--checkpoint_dir=%s' % checkpoint_dir,
          '--eval_dir=%s' % os.path.join(work, 'eval'),
          '--eval_interval_secs=1', '--num_examples=%d' % examples,
          '--batch_size=%d' % FLAGS.batch_size]
  rates, first_batches = [], []
  with tempfile.TemporaryFile('w+') as stderr:
    proc = None
    try:
      with _signals_held():
        proc = subprocess.Popen([sys.executable] + args,
                                stdout=subprocess.PIPE, stderr=stderr,
                                env=_environment(), text=True, cwd=_HERE)
      for line in proc.stdout:
        match = _EVAL.search(line)
        if not match:
          continue
        # The rate, not count / seconds: the seconds are rounded to 1/100.
        count, rate, first_batch = match.groups()
        rates.append(float(rate))
        first_batches.append(float(first_batch))
        if len(rates) > later:
          break
        publish(len(rates))
    finally:
      # Done, or the benchmark itself failed or was stopped (see main):
      # the evaluator would otherwise watch on, and outlive the benchmark
      # and its temporary data.
      if proc is not None:
        if proc.poll() is None:
          proc.terminate()
          try:
            proc.wait(timeout=60)
          except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    stderr.seek(0)
    if len(rates) <= later:
      _check_exit(args, proc.returncode, stderr.read())
      raise ValueError('%s stopped after %d evaluations'
                       % (' '.join(args), len(rates)))
  return int(count), rates, first_batches


def summarize(rates):
  """Median and spread of per-step rates."""
  rates = np.asarray(rates)
  return {'median': float(np.median(rates)), 'min': float(rates.min()),
          'max': float(rates.max()),
          'p25': float(np.percentile(rates, 25)),
          'p75': float(np.percentile(rates, 75)), 'samples': int(rates.size)}


def _refuse_training_flags():
  """The trainers' flags that the benchmark imports but does not use (it
  makes its own data and directories) are an error, not ignored.

  Raises:
    cifar10_cli.UsageError: naming the first such flag given.
  """
  # --use_fp16 picks the precision --profile traces; the figures have both.
  used = {'batch_size', 'use_fp16'} if FLAGS.profile else {'batch_size'}
  by_module = FLAGS.flags_by_module_dict()
  for module in ('cifar10', 'cifar10_train', 'cifar10_cluster'):
    for flag in by_module.get(module, []):
      if flag.present and flag.name not in used:
        raise cifar10_cli.UsageError(
            '--%s is not a flag of the benchmark%s (see --helpfull)'
            % (flag.name, ' without --profile: it measures both precisions'
               if flag.name == 'use_fp16' else
               ', which writes its own data and directories'))


def _refuse_flags_of_other_modes():
  """The benchmark's own flags that --smoke or --profile do not use are an
  error too: --smoke sets its own few steps and one round, and --profile
  traces one run.

  Raises:
    cifar10_cli.UsageError: naming the first such flag given.
  """
  unused = {}  # flag name -> the mode that ignores it
  if FLAGS.smoke:
    unused = dict.fromkeys(['steps', 'warmup', 'rounds', 'later_checkpoints'],
                           'smoke')
  if FLAGS.profile:
    unused.update(dict.fromkeys(['rounds', 'later_checkpoints'], 'profile'))
  for name, mode in unused.items():
    if FLAGS[name].present:
      raise cifar10_cli.UsageError('--%s is not used with --%s'
                                   % (name, mode))


def main(argv=None):  # pylint: disable=unused-argument
  _refuse_training_flags()
  _refuse_flags_of_other_modes()
  smoke = FLAGS.smoke
  per_file, test_records = (256, 256) if smoke else (10000, 10000)
  steps = 3 if smoke else FLAGS.steps
  warmup = 2 if smoke else FLAGS.warmup
  if FLAGS.json:
    cifar10_cli.check_output_file('json')
  # The evaluator is stopped and the temporary data removed.
  cifar10_cli.exit_on_sigterm()
  work = tempfile.mkdtemp(prefix='cifar10_benchmark-')
  try:
    data_dir = os.path.join(work, 'data')
    batches_dir = os.path.join(data_dir, cifar10_input.BATCHES_DIR)
    write_data(batches_dir, per_file, test_records)
    figures = {'machine': machine(), 'batch_size': FLAGS.batch_size,
               'smoke': smoke,
               'flops_per_training_example': FLOPS_PER_TRAINING_EXAMPLE}
    cifar10_cli.log(figures['machine'])
    if FLAGS.profile:
      wall_ms, by_type, by_name = profile_step(batches_dir, steps, warmup)
      print_profile(wall_ms, by_type, by_name)
      figures.update(mixed_precision=FLAGS.use_fp16, step_ms=wall_ms,
                     ms_by_op_type=by_type, ms_by_op=by_name)
      _write_json(figures)
      return 0

    configs = [('train_fp32', 'cifar10_train.py', []),
               ('multi_gpu_1_tower_fp32', 'cifar10_multi_gpu_train.py',
                ['--num_gpus=1']),
               ('train_mixed_precision', 'cifar10_train.py', ['--use_fp16'])]
    results = {name: {'rates': [], 'first_step_s': [], 'peak_rss_mb': []}
               for name, _, _ in configs}
    # The first evaluation of each round's evaluator, and the later ones:
    # their images/sec and their first batches' ms.
    evaluations = {'first': ([], []), 'later': ([], [])}
    matmul_rates = []
    for round_index in range(1 if smoke else FLAGS.rounds):
      for name, script, extra in configs:
        rates, first, peak = train_once(
            script, data_dir, os.path.join(work, name), warmup + steps, extra)
        results[name]['rates'] += rates[warmup - 1:]
        results[name]['first_step_s'].append(first)
        results[name]['peak_rss_mb'].append(peak)
        cifar10_cli.log('round %d, %s: median %.0f examples/sec' % (
            round_index + 1, name, np.median(rates[warmup - 1:])))
      # The matmul rate next to the training it is compared with: a single
      # measurement at one moment would set the ratio by that moment's noise.
      matmul_rates.append(matmul_flops(256 if smoke else 2048,
                                       5 if smoke else 30) / 1e9)
      # Evaluates the checkpoint this round's float32 run left.
      figures['eval_images'], rates, first_batches = evaluate_watching(
          data_dir, os.path.join(work, 'train_fp32'), work, test_records,
          1 if smoke else FLAGS.later_checkpoints)
      for name, part in (('first', slice(1)), ('later', slice(1, None))):
        evaluations[name][0].extend(rates[part])
        evaluations[name][1].extend(first_batches[part])
      cifar10_cli.log('round %d, evaluation: %s images/sec' % (
          round_index + 1, ', '.join('%.0f' % r for r in rates)))
    for name, result in results.items():
      figures[name] = dict(summarize(result.pop('rates')),
                           first_step_s=min(result['first_step_s']),
                           peak_rss_mb=max(result['peak_rss_mb']))

    figures['matmul_gflops'] = float(np.median(matmul_rates))
    figures['matmul_runs_gflops'] = matmul_rates
    train_rate = figures['train_fp32']['median']
    figures['ratio_to_matmul'] = (train_rate * FLOPS_PER_TRAINING_EXAMPLE /
                                  (figures['matmul_gflops'] * 1e9))
    figures['mixed_precision_speedup'] = (
        figures['train_mixed_precision']['median'] / train_rate)
    figures['pipeline_images_per_sec'] = pipeline_rate(
        batches_dir, FLAGS.batch_size, 10 if smoke else 100)
    figures['pipeline_to_training'] = (figures['pipeline_images_per_sec'] /
                                       train_rate)

    for name, (rates, first_batches) in evaluations.items():
      figures['eval_%s_images_per_sec' % name] = float(np.median(rates))
      figures['eval_%s_runs_images_per_sec' % name] = rates
      figures['eval_%s_first_batch_ms' % name] = float(
          np.median(first_batches))

    print_table(figures)
    _write_json(figures)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return 0


def _write_json(figures):
  if FLAGS.json:
    cifar10_cli.write_json('json', figures)


def print_table(figures):
  """The figures as a readable table."""
  rows = [('machine', figures['machine']),
          ('batch size', '%d' % figures['batch_size'])]
  for name, label in [('train_fp32', 'cifar10_train.py float32'),
                      ('multi_gpu_1_tower_fp32',
                       'cifar10_multi_gpu_train.py, 1 tower, float32'),
                      ('train_mixed_precision',
                       'cifar10_train.py --use_fp16')]:
    f = figures[name]
    rows.append(('%s, examples/sec' % label,
                 '%.0f median (p25 %.0f, p75 %.0f, min %.0f, max %.0f; '
                 '%d steps)' % (f['median'], f['p25'], f['p75'], f['min'],
                                f['max'], f['samples'])))
    rows.append(('%s, first step after start' % label,
                 '%.2f s' % f['first_step_s']))
    rows.append(('%s, peak resident memory' % label,
                 '%.0f MB' % f['peak_rss_mb']))
  rows += [
      ('float32 matmul rate', '%.0f GFLOP/s (median of %s)' % (
          figures['matmul_gflops'],
          ', '.join('%.0f' % r for r in figures['matmul_runs_gflops']))),
      ('FLOPs per training example', '%.1f M (counted: 3 x 2 x multiply-adds'
       ' of the conv and fully connected layers, less the image gradient)'
       % (figures['flops_per_training_example'] / 1e6)),
      ('ratio of float32 training to matmul rate',
       '%.2f' % figures['ratio_to_matmul']),
      ('mixed precision / float32', '%.2f x'
       % figures['mixed_precision_speedup']),
      ('input pipeline alone', '%.0f images/sec (%.1f x training)'
       % (figures['pipeline_images_per_sec'],
          figures['pipeline_to_training'])),
  ]
  for name, label in (('first', 'evaluation, first checkpoint (--run_once)'),
                      ('later', 'evaluation, each later checkpoint')):
    rows.append((label, '%.0f images/sec over %d images (median of %s); '
                 'first batch %.0f ms' % (
                     figures['eval_%s_images_per_sec' % name],
                     figures['eval_images'],
                     ', '.join('%.0f' % r for r in
                               figures['eval_%s_runs_images_per_sec' % name]),
                     figures['eval_%s_first_batch_ms' % name])))
  width = max(len(r[0]) for r in rows)
  for label, value in rows:
    print('%-*s  %s' % (width, label, value))
  sys.stdout.flush()


if __name__ == '__main__':
  cifar10_cli.run(main)
