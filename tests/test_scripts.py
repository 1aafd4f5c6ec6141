"""End-to-end runs of the training and evaluation scripts on tiny data."""

import os
import re
import shutil
import signal
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import cifar10
import cifar10_cli
import cifar10_train

from cifar_testdata import run_script, start_script

STEP_LINE = re.compile(
    r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: step (\d+), loss = \d+\.\d\d '
    r'\(\d+\.\d examples/sec; \d+\.\d{3} sec/batch\)$', re.M)
PRECISION_LINE = re.compile(
    r'^\d{4}-\d\d-\d\d [\d:.]+: precision @ 1 = (\d\.\d{3}) \(top-1 accuracy: '
    r'(\d+) / (\d+) correct, checkpoint at step (\d+)\)$', re.M)


def _train(data_dir, train_dir, *args, check=0, script='cifar10_train.py'):
  return run_script(script, '--data_dir=%s' % data_dir,
                    '--train_dir=%s' % train_dir, '--batch_size=16',
                    '--log_frequency=2', *args, check=check)


def _latest_step(train_dir):
  path = tf.train.latest_checkpoint(train_dir)
  return int(tf.train.load_variable(path, 'global_step')) if path else None


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A --train_dir trained to step 6, then resumed to step 10."""
  root = data_dir[0]
  train_dir = str(tmp_path_factory.mktemp('train'))
  first = _train(root, train_dir, '--max_steps=6',
                 '--log_device_placement=false')
  second = _train(root, train_dir, '--max_steps=10')
  return root, train_dir, first, second


def test_training_logs_checkpoints_and_summaries(trained):
  _, train_dir, first, _ = trained
  assert [int(s) for s in STEP_LINE.findall(first.stdout)] == [2, 4, 6]
  assert 'starting fresh at step 0' in first.stdout
  # 350 epochs of 50,000 images at 16 a step.
  assert ('learning rate 0.1 at step 0, x0.1 every 1093750 steps (350 epochs '
          'of 16 images per step)') in first.stdout
  assert 'batch size 16 x 1 tower(s) on /cpu:0' in first.stdout
  assert 'tensorboard --logdir' in first.stdout
  files = os.listdir(train_dir)
  assert any(f.startswith('events.out.tfevents.') for f in files)
  assert 'model.ckpt-6.index' in files


def test_second_run_resumes(trained):
  _, train_dir, _, second = trained
  assert re.search(r'resuming from .*model\.ckpt-6 \(step 6\)', second.stdout)
  assert 'learning rate 0.1 at step 6, x0.1 every 1093750 steps' in (
      second.stdout)
  assert [int(s) for s in STEP_LINE.findall(second.stdout)] == [8, 10]
  assert _latest_step(train_dir) == 10
  # Nothing of the first run was deleted.
  assert 'model.ckpt-6.index' in os.listdir(train_dir)


def test_max_steps_already_reached(trained):
  root, train_dir, _, _ = trained
  before = sorted(os.listdir(train_dir))
  proc = _train(root, train_dir, '--max_steps=10')
  assert 'already at step 10, --max_steps=10: nothing to do' in proc.stdout
  assert sorted(os.listdir(train_dir)) == before


def test_fresh_restarts_and_says_what_it_removes(trained, tmp_path):
  root, train_dir, _, _ = trained
  copy = str(tmp_path / 'train')
  shutil.copytree(train_dir, copy)
  mine = ('notes.txt', 'checkpoint_notes.txt', 'model.ckpt-best.h5',
          'model.ckpt-10.index.bak')
  # What interrupted saves leave: TensorFlow's atomic write of the .meta
  # file, and its checkpoint writer's data file (unsharded saves).
  interrupted = ('model.ckpt-12.meta.tmp%s' % ('0f' * 16),
                 'model.ckpt-12.data-00000-of-00001.tempstate123')
  for name in mine + interrupted:
    with open(os.path.join(copy, name), 'w') as f:
      f.write('mine')
  proc = _train(root, copy, '--max_steps=2', '--fresh')
  assert re.search(r'--fresh: removing \d+ file\(s\) from %s: .*checkpoint'
                   r'.*model\.ckpt-10\.index' % re.escape(copy), proc.stdout)
  assert 'starting fresh at step 0' in proc.stdout
  assert _latest_step(copy) == 2
  left = set(os.listdir(copy))
  assert not left & ({'model.ckpt-10.index'} | set(interrupted))
  assert set(mine) <= left


def test_eval_run_once_counts_each_image_once(trained, tmp_path):
  """250 of the 300 test images, in batches of 128 and 122: not the 256 of
  two whole batches."""
  root, train_dir, _, _ = trained
  eval_dir = str(tmp_path / 'eval')
  before = sorted(os.listdir(train_dir))
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % root,
                    '--checkpoint_dir=%s' % train_dir,
                    '--eval_dir=%s' % eval_dir, '--run_once',
                    '--num_examples=250', check=0)
  (precision, correct, total, step), = PRECISION_LINE.findall(proc.stdout)
  assert (int(total), int(step)) == (250, 10)
  assert float(precision) == pytest.approx(int(correct) / 250, abs=5e-4)
  # The summary is at the checkpoint's step.
  events = [os.path.join(eval_dir, f) for f in os.listdir(eval_dir)]
  values = [(e.step, v.tag, v.simple_value)
            for path in events for e in tf.train.summary_iterator(path)
            for v in e.summary.value if v.tag == 'Precision @ 1']
  assert values == [(10, 'Precision @ 1', pytest.approx(float(precision),
                                                        abs=5e-4))]
  assert sorted(os.listdir(train_dir)) == before  # eval wrote nothing there


def test_eval_watch_evaluates_each_new_checkpoint_once(data_dir, tmp_path):
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  _train(root, train_dir, '--max_steps=2')
  log_path = str(tmp_path / 'eval.log')
  with open(log_path, 'w') as log:
    proc = start_script('cifar10_eval.py', '--data_dir=%s' % root,
                        '--checkpoint_dir=%s' % train_dir,
                        '--eval_dir=%s' % str(tmp_path / 'eval'),
                        '--eval_interval_secs=1', '--num_examples=100',
                        stdout=log, stderr=log)
  try:

    def evaluated_steps(count):
      deadline = time.time() + 120
      while time.time() < deadline:
        with open(log_path) as f:
          steps = [int(m[3]) for m in PRECISION_LINE.findall(f.read())]
        if len(steps) >= count:
          return steps
        assert proc.poll() is None, open(log_path).read()
        time.sleep(0.5)
      raise AssertionError(open(log_path).read())

    assert evaluated_steps(1) == [2]
    _train(root, train_dir, '--max_steps=4', '--save_checkpoint_steps=1')
    steps = evaluated_steps(3)
    time.sleep(3)  # a few more polls: nothing is evaluated twice
    with open(log_path) as f:
      steps = [int(m[3]) for m in PRECISION_LINE.findall(f.read())]
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
  # Step 2 at start, then each checkpoint the second run wrote, once each
  # (it saves at its start, at steps 3 and 4).
  assert steps[0] == 2 and sorted(set(steps)) == steps
  assert steps[-1] == 4
  assert proc.returncode == 0


def _biased_copy(checkpoint, target, label, step):
  """A copy of `checkpoint` at `step` whose averaged weights always predict
  `label`."""
  reader = tf.train.load_checkpoint(checkpoint)
  values = {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()}
  bias = 'softmax_linear/biases/ExponentialMovingAverage'
  values[bias] = np.where(np.arange(cifar10.NUM_CLASSES) == label, 1e6,
                          0).astype(np.float32)
  values['global_step'] = np.int64(step)
  with tf.Graph().as_default():
    variables = {name: tf.Variable(value) for name, value in values.items()}
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      tf.train.Saver(variables).save(sess, target, write_meta_graph=False)


def test_report_of_a_class_without_images(capsys):
  """--num_examples smaller than the test set can leave a class out: its
  accuracy is null in the JSON and '-' in the table, not 0."""
  import cifar10_eval  # pylint: disable=g-import-not-at-top
  from cifar_testdata import CLASS_NAMES  # pylint: disable=g-import-not-at-top
  confusion = np.diag([3, 0, 1, 0, 0, 0, 0, 0, 0, 2]).astype(np.int64)
  confusion[2, 9] = 1
  figures = cifar10_eval.report(confusion, CLASS_NAMES, 5, 'model.ckpt-5')
  assert figures['per_class'][1] == {'class': 'automobile', 'correct': 0,
                                     'total': 0, 'accuracy': None}
  assert figures['per_class'][2]['accuracy'] == 0.5
  assert (figures['correct'], figures['num_examples']) == (6, 7)
  cifar10_eval.print_report(figures)
  table = capsys.readouterr().out.split('confusion matrix')[0]
  rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()}
  assert rows['automobile'][:4] == ['0', '/', '0', '-']
  assert rows['bird'][:4] == ['1', '/', '2', '0.500']


def test_one_evaluator_restores_each_checkpoint_and_counts_one_pass(
    trained, data_dir, tmp_path, flags,
    graph):  # pylint: disable=unused-argument
  """The watching evaluator keeps its session and the preprocessed batches
  between checkpoints; each evaluation must still see the checkpoint's own
  weights and exactly --num_examples images, here 300 in batches of
  128, 128 and 44: each test image once, so the confusion matrix's rows
  count the test labels."""
  import cifar10_eval  # pylint: disable=g-import-not-at-top
  from cifar_testdata import CLASS_NAMES  # pylint: disable=g-import-not-at-top
  root, train_dir, _, _ = trained
  flags.data_dir = root
  flags.eval_dir = str(tmp_path / 'eval')
  flags.batch_size = 128
  plain = tf.train.latest_checkpoint(train_dir)
  fresh = cifar10_eval._Evaluator(True, 300, CLASS_NAMES)
  _, expected, _ = fresh.evaluate(plain)
  fresh.close()
  true_counts = np.bincount(data_dir[2]['test_batch.bin'][0], minlength=10)
  np.testing.assert_array_equal(expected.sum(axis=1), true_counts)
  # A class the plain checkpoint predicts least, so the two differ.
  label = int(np.argmin(expected.sum(axis=0)))
  biased = str(tmp_path / 'model.ckpt-99')
  _biased_copy(plain, biased, label, 99)

  evaluator = cifar10_eval._Evaluator(True, 300, CLASS_NAMES)
  paths = (plain, biased, plain, biased, biased)
  results = [evaluator.evaluate(path)[:2] for path in paths]
  evaluator.close()
  evaluator.writer.close()
  # Step 10 after 99, as after a trainer's --fresh, and 99 after 99, as
  # when it writes that step again: marked as restarts, which TensorBoard
  # answers by dropping the points from that step on.
  events = [e for path in tf.io.gfile.glob(str(tmp_path / 'eval' / '*'))
            for e in tf.train.summary_iterator(path)]
  assert [e.step for e in events if e.HasField('session_log') and
          e.session_log.status == tf.SessionLog.START] == [10, 99]
  for path, (step, confusion) in zip(paths, results):
    assert confusion.sum() == 300
    if path == plain:
      assert step == 10
      np.testing.assert_array_equal(confusion, expected)
    else:
      assert step == 99
      assert confusion[:, label].sum() == 300
      # The true labels are those of the plain evaluation: the same images.
      np.testing.assert_array_equal(confusion.sum(axis=1), true_counts)


class _SignalingEvaluator(object):
  """Stands in for cifar10_eval._Evaluator: each evaluation sends this
  process the signals listed for its checkpoint."""
  class_names = ['class%d' % i for i in range(10)]

  def __init__(self, signals):
    self.signals = signals
    self.evaluated = []

  def evaluate(self, checkpoint):
    self.evaluated.append(checkpoint)
    for signum in self.signals.get(checkpoint, ()):
      os.kill(os.getpid(), signum)
    confusion = np.eye(10, dtype=np.int64)
    return len(self.evaluated), confusion, (0.0, 1.0)


@pytest.fixture
def watching_eval(flags):
  """cifar10_eval as a watching evaluator (not --run_once) with its signal
  handlers installed; this process's handlers come back after the test."""
  import cifar10_eval  # pylint: disable=g-import-not-at-top
  flags.run_once = False
  saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    cifar10_eval._Stop.signum = None
    cifar10_eval._Stop.install()
    yield cifar10_eval
  finally:
    cifar10_eval._Stop.signum = None
    for s, handler in saved.items():
      signal.signal(s, handler)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_eval_watch_stops_after_the_evaluation_under_way(watching_eval, flags,
                                                         signum):
  """A signal during the first of three pending evaluations: that one is
  reported, the others are not; a second signal acts at once."""
  flags.eval_interval_secs = 300
  evaluator = _SignalingEvaluator({'a': [signum]})
  assert watching_eval._watch(evaluator, ['a', 'b', 'c'], set()) == 0
  assert evaluator.evaluated == ['a']
  again = KeyboardInterrupt if signum == signal.SIGINT else SystemExit
  with pytest.raises(again):
    os.kill(os.getpid(), signum)
    time.sleep(1)  # The handler runs at the next bytecode.


def test_eval_watch_evaluates_every_checkpoint_written_meanwhile(
    watching_eval, flags, monkeypatch):
  """Three checkpoints written between two looks at the directory (a fast
  trainer, a slow evaluator): each is evaluated, oldest first."""
  flags.eval_interval_secs = 1
  listings = iter([[('a', 1), ('b', 2), ('c', 3), ('d', 4)]])
  monkeypatch.setattr(watching_eval, '_checkpoints',
                      lambda unused_dir: next(listings))
  evaluator = _SignalingEvaluator({'d': [signal.SIGTERM]})
  assert watching_eval._watch(evaluator, ['a'], {('a', 1)}) == 0
  assert evaluator.evaluated == ['a', 'b', 'c', 'd']


def test_eval_on_training_data(trained, tmp_path):
  """--eval_data=train_eval reads the five training files (320 images in
  the test data; the test file has 300)."""
  root, train_dir, _, _ = trained
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % root,
                    '--checkpoint_dir=%s' % train_dir,
                    '--eval_dir=%s' % (tmp_path / 'eval'), '--run_once',
                    '--eval_data=train_eval', '--num_examples=320', check=0)
  (_, _, total, step), = PRECISION_LINE.findall(proc.stdout)
  assert (int(total), int(step)) == (320, 10)
  assert 'evaluating 320 train_eval images' in proc.stdout


def test_eval_without_checkpoint(data_dir, tmp_path):
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % tmp_path,
                    '--eval_dir=%s' % (tmp_path / 'eval'), '--run_once',
                    '--num_examples=300')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      'cifar10_eval.py: error: no checkpoint in --checkpoint_dir=%s'
      % tmp_path)


def test_two_towers_on_cpu_and_interchangeable_checkpoints(data_dir,
                                                           tmp_path):
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  proc = _train(root, train_dir, '--max_steps=4', '--num_gpus=2',
                script='cifar10_multi_gpu_train.py')
  assert 'no GPU found: running the 2 tower(s) on the CPU' in proc.stdout
  assert 'batch size 16 x 2 tower(s) on /cpu:0, /cpu:0' in proc.stdout
  lines = STEP_LINE.findall(proc.stdout)
  assert [int(s) for s in lines] == [2, 4]
  # 32 images a step: the examples/sec figure is for the global batch.
  line = [l for l in proc.stdout.splitlines() if ': step 4,' in l][0]
  examples, seconds = re.search(r'\(([\d.]+) examples/sec; ([\d.]+) sec',
                                line).groups()
  # sec/batch is printed to the millisecond: check within that rounding.
  assert 32 / float(examples) == pytest.approx(float(seconds), abs=5e-4)
  # The single-tower trainer resumes from the two-tower checkpoint.
  proc = _train(root, train_dir, '--max_steps=6')
  assert 'resuming from' in proc.stdout and _latest_step(train_dir) == 6


def _poison_checkpoint(train_dir):
  """Makes the logits' biases NaN in the newest checkpoint."""
  path = tf.train.latest_checkpoint(train_dir)
  with tf.Graph().as_default():
    variables = [tf.Variable(tf.train.load_variable(path, name), name=name)
                 for name, _ in tf.train.list_variables(path)]
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      for v in variables:
        if v.op.name == 'softmax_linear/biases':
          sess.run(v.assign(v * np.nan))
      tf.train.Saver(variables).save(sess, path)


def test_nan_loss_stops_training(data_dir, tmp_path):
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  _train(root, train_dir, '--max_steps=2')
  _poison_checkpoint(train_dir)
  before = sorted(os.listdir(train_dir))
  # A checkpoint is due at every step: none may hold the diverged weights.
  proc = _train(root, train_dir, '--max_steps=20', '--save_checkpoint_steps=1',
                check=1)
  assert re.search(r'cifar10_train.py: error: loss or gradients not finite '
                   r'at step 3 \(learning rate 0.1; no finite loss before\); '
                   r'training stopped without saving this state$',
                   proc.stderr.strip())
  # The poisoned run saved nothing new (its start-up checkpoint is step 2).
  assert _latest_step(train_dir) == 2
  assert not [f for f in os.listdir(train_dir)
              if f.startswith('model.ckpt-') and f not in before]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_then_exits(data_dir, tmp_path, signum):
  """Ctrl-C (SIGINT) or kill (SIGTERM)."""
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  proc = start_script('cifar10_train.py', '--data_dir=%s' % root,
                      '--train_dir=%s' % train_dir, '--batch_size=16',
                      '--log_frequency=2', '--max_steps=100000',
                      '--save_checkpoint_secs=3600', stdout=-1, stderr=-1)
  output = ''
  try:
    for line in proc.stdout:
      output += line
      if STEP_LINE.match(line.strip()) and ': step 6,' in line:
        proc.send_signal(signum)
        break
    out, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  output += out
  assert proc.returncode == 128 + signum, err
  assert ('%s received: saving a checkpoint, then exiting'
          % signal.Signals(signum).name) in output
  stopped = int(re.search(r'stopped at step (\d+); checkpoint saved',
                          output).group(1))
  assert stopped >= 6 and _latest_step(train_dir) == stopped


def test_a_second_trainer_on_the_same_train_dir_is_refused(data_dir,
                                                          tmp_path):
  """Not even its --fresh may touch the running trainer's files."""
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  first = start_script('cifar10_train.py', '--data_dir=%s' % root,
                       '--train_dir=%s' % train_dir, '--batch_size=16',
                       '--log_frequency=2', '--max_steps=100000',
                       stdout=-1, stderr=-1)
  try:
    for line in first.stdout:
      if STEP_LINE.match(line.strip()):
        break
    # Paused, it holds the lock and does not train on while the second one
    # starts: a few hundred steps at batch 16 on this tiny data set can
    # diverge (the trainer then stops on its own) or fill the unread pipe.
    first.send_signal(signal.SIGSTOP)
    before = sorted(os.listdir(train_dir))
    second = _train(root, train_dir, '--max_steps=2', '--fresh', check=None)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        'cifar10_train.py: error: --train_dir=%s is in use by another trainer '
        '(it holds %s): stop it, or train into another directory'
        % (train_dir, os.path.join(train_dir, '.cifar10-train.lock')))
    assert set(before) <= set(os.listdir(train_dir))
    first.send_signal(signal.SIGTERM)
    first.send_signal(signal.SIGCONT)
    first.communicate(timeout=60)
  finally:
    first.kill()
  assert first.returncode == 128 + signal.SIGTERM
  # The lock goes with the process that held it.
  _train(root, train_dir, '--max_steps=2', '--fresh')


class _RunValues(object):

  def __init__(self, results):
    self.results = results


def test_log_line_figures_are_per_batch_since_the_last_line(monkeypatch):
  """With a step every 2 s, the line at step 10 (the first after step 1,
  which includes the set-up) gives 2 sec/batch and 64 examples/sec for
  batches of 128, and the line at step 20 the same."""
  clock = [0.0]
  monkeypatch.setattr(cifar10_train.time, 'time', lambda: clock[0])
  lines = []
  monkeypatch.setattr(cifar10_cli, 'log', lines.append)
  graph = cifar10_train.TrainingGraph(None, None, None, None, None, 128)
  hook = cifar10_train._TrainingMonitorHook(graph, log_frequency=10)
  for step in range(1, 21):
    clock[0] = 2.0 * step
    hook.after_run(None, _RunValues((step, 1.5, 0.1)))
  assert lines[1:] == [
      'step 10, loss = 1.50 (64.0 examples/sec; 2.000 sec/batch)',
      'step 20, loss = 1.50 (64.0 examples/sec; 2.000 sec/batch)']


def test_nan_message_gives_step_learning_rate_and_last_finite_loss():
  graph = cifar10_train.TrainingGraph(None, None, None, None, None, 128)
  hook = cifar10_train._TrainingMonitorHook(graph, log_frequency=10)
  hook.after_run(None, _RunValues((41, 2.5, 0.1)))
  hook.after_run(None, _RunValues((42, 2.25, 0.01)))
  error = hook.diverged()
  assert isinstance(error, cifar10_train.TrainingDivergedError)
  assert str(error) == (
      'loss or gradients not finite at step 43 (learning rate 0.01; last '
      'finite loss 2.2500 at step 42); training stopped without saving this '
      'state')


@pytest.mark.parametrize('bad', [np.inf, np.nan])
def test_non_finite_gradient_fails_the_step_with_a_finite_loss(bad):
  """The gradients are checked too, not only the loss: a step whose loss is
  finite but whose gradient is not changes nothing."""
  with tf.Graph().as_default():
    weights = tf.Variable([1.0, 2.0], name='weights')
    global_step = tf.train.get_or_create_global_step()
    gradient = tf.placeholder(tf.float32, [2])
    loss = tf.identity(tf.reduce_sum(weights), name='total_loss')
    train_op = cifar10.train(loss, global_step,
                             grads_and_vars=[(gradient, weights)],
                             examples_per_step=128)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(train_op, {gradient: [1.0, 1.0]})
      # Finite, though the sum of their squares overflows float32.
      sess.run(train_op, {gradient: [2e19, 2e19]})
      before = sess.run(tf.global_variables())
      with pytest.raises(tf.errors.InvalidArgumentError,
                         match=cifar10.NON_FINITE_LOSS):
        sess.run(train_op, {gradient: [0.5, bad]})
      for old, new in zip(before, sess.run(tf.global_variables())):
        np.testing.assert_array_equal(old, new)
      assert sess.run(global_step) == 2


def test_non_finite_loss_fails_the_step_before_any_update():
  """The step raises before applying anything: the weights, their moving
  averages and the global step stay as they were."""
  with tf.Graph().as_default():
    images = tf.placeholder(tf.float32, [4, 24, 24, 3])
    g = cifar10_train.build_towers(images, tf.constant([1, 2, 3, 4]),
                                   ['/cpu:0', '/cpu:0'])
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      good = np.random.RandomState(0).randn(4, 24, 24, 3)
      sess.run(g.train_op, {images: good})
      biases = [v for v in tf.trainable_variables()
                if v.op.name == 'softmax_linear/biases'][0]
      sess.run(biases.assign(biases * np.inf))
      before = sess.run(tf.global_variables())
      with pytest.raises(tf.errors.InvalidArgumentError,
                         match=cifar10.NON_FINITE_LOSS):
        sess.run(g.train_op, {images: good})
      for old, new in zip(before, sess.run(tf.global_variables())):
        np.testing.assert_array_equal(old, new)
