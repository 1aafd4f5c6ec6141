"""Evaluates CIFAR-10 checkpoints with the moving averages of the weights.

  python cifar10_eval.py [--checkpoint_dir=/tmp/cifar10_train] [--run_once]

Runs next to cifar10_train.py: it watches --checkpoint_dir and evaluates each
new checkpoint once, on exactly --num_examples images (each once, the last
partial batch included), and prints the tutorial's line

  <timestamp>: precision @ 1 = 0.860 (top-1 accuracy: 8600 / 10000 correct, ...)

followed by per-class accuracy and the confusion matrix. It writes summaries
to --eval_dir, the figures to --report_json if given (never in place of a
file that is not a JSON object), and nothing else.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import hashlib
import os
import signal
import struct
import sys
import time
import zlib

import numpy as np
import tensorflow.compat.v1 as tf

import cifar10
import cifar10_cli
import cifar10_input

FLAGS = tf.app.flags.FLAGS

tf.app.flags.DEFINE_string('eval_dir', '/tmp/cifar10_eval',
                           """Directory where to write event logs.""")
tf.app.flags.DEFINE_enum('eval_data', 'test', ['test', 'train_eval'],
                         """Either 'test' or 'train_eval'.""")
cifar10_cli.define_checkpoint_dir()
tf.app.flags.DEFINE_integer('eval_interval_secs', 300,
                            """How often to look for a new checkpoint.""")
tf.app.flags.DEFINE_integer('num_examples', 10000,
                            """Number of examples to run.""")
tf.app.flags.DEFINE_boolean('run_once', False,
                            """Whether to run eval only once.""")
tf.app.flags.DEFINE_string(
    'report_json', '',
    """If set, write the figures of each evaluation (counts, per-class
    accuracy, confusion matrix) to this JSON file.""")

for _name in ('batch_size', 'num_examples', 'eval_interval_secs'):
  cifar10_cli.positive(_name)
cifar10_cli.path_flag('eval_dir')

class _Evaluator(object):
  """The evaluation graph and its session, made once, and one evaluation per
  checkpoint.

  The first evaluation reads and preprocesses the images and keeps the
  batches in memory (num_examples x 6,912 bytes); later ones restore the
  weights into the same session and run only the model. Graph optimization,
  the input's start-up and its preprocessing are paid once, not once per
  checkpoint, which leaves more of the machine to the trainer.
  """

  def __init__(self, eval_data, num_examples, class_names):
    self.class_names = class_names
    self.num_examples = num_examples
    self.graph = tf.Graph()
    with self.graph.as_default():
      images, self.labels = cifar10.inputs(eval_data, num_examples,
                                           repeat=True)
      # The summary of the first batch's images. Every batch runs the same
      # fetches: a second set would cost a second executor, a batch's time
      # or more. (The model's activation histograms belong to training, and
      # would take a quarter of an evaluation's time.)
      batches_read = tf.Variable(0, trainable=False, name='batches_read',
                                 collections=[tf.GraphKeys.LOCAL_VARIABLES])
      self.summary_op = tf.cond(
          tf.equal(batches_read.assign_add(1), 1),
          lambda: cifar10_input.image_summary(images),
          lambda: tf.constant(''))
      self.local_init = tf.local_variables_initializer()
      logits = cifar10.inference(images)
      self.predictions = tf.argmax(logits, 1, output_type=tf.int32)
      self.var_map = cifar10.variables_to_restore()
      self.saver = tf.train.Saver(self.var_map)
    self.writer = tf.summary.FileWriter(FLAGS.eval_dir, self.graph)
    self.last_step = None
    self.sess = None

  def close(self):
    if self.sess is not None:
      self.sess.close()
      self.sess = None

  def evaluate(self, checkpoint):
    """Evaluates one checkpoint.

    Returns:
      (global step, confusion matrix [true, predicted] as int64 numpy array,
      (seconds of the first batch, seconds from the first batch to the
      last)). The first batch of a session also pays its set-up.

    Raises:
      tf.errors.NotFoundError: if the checkpoint was deleted meanwhile.
      ValueError: if it was written by a different model.
      OSError: if a data file went missing while it was read.
    """
    cifar10_cli.check_checkpoint(checkpoint, self.var_map)
    step = cifar10_cli.checkpoint_step(checkpoint)
    if self.sess is None:
      self.sess = tf.Session(graph=self.graph,
                             config=cifar10_cli.session_config())
    # The trainer may have deleted it since the check above.
    with cifar10_cli.deleted_as_not_found(checkpoint):
      self.saver.restore(self.sess, checkpoint)
    confusion = np.zeros((cifar10.NUM_CLASSES, cifar10.NUM_CLASSES), np.int64)
    fetches = [self.labels, self.predictions, self.summary_op]
    try:
      self.sess.run(self.local_init)
      start = time.time()
      labels, predictions, summary = self.sess.run(fetches)
      first_batch = time.time() - start
      # The input repeats its passes without end, each of num_examples
      # images in whole batches: an evaluation reads one pass.
      while True:
        np.add.at(confusion, (labels, predictions), 1)
        if confusion.sum() >= self.num_examples:
          break
        labels, predictions, _ = self.sess.run(fetches)
      seconds = time.time() - start
    except BaseException as error:
      # Stopped inside a pass: the next evaluation gets a new session, and
      # the input starts again at its first image.
      self.close()
      if isinstance(error, tf.errors.NotFoundError):
        # A data file, not the checkpoint (restored above), which the watch
        # would skip as one the trainer rotated away.
        raise OSError('reading the evaluation images: %s'
                      % cifar10_cli.one_line(error)) from error
      raise
    self._write_summaries(summary, step, confusion)
    return step, confusion, (first_batch, seconds)

  def _write_summaries(self, summary_str, step, confusion):
    if self.last_step is not None and step <= self.last_step:
      # The trainer started over (--fresh): marked as a restart, TensorBoard
      # drops the old training's points from this step on, rather than
      # drawing the new ones among them.
      self.writer.add_session_log(
          tf.SessionLog(status=tf.SessionLog.START), step)
    self.last_step = step
    summary = tf.Summary()
    summary.ParseFromString(summary_str)
    summary.value.add(tag='Precision @ 1',
                      simple_value=np.trace(confusion) / confusion.sum())
    summary.value.add(tag='confusion_matrix', image=_confusion_image(confusion))
    self.writer.add_summary(summary, step)
    self.writer.flush()


def _png(pixels):
  """PNG bytes of an 8-bit grayscale image (2-D uint8 array)."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  height, width = pixels.shape
  rows = b''.join(b'\0' + row.tobytes() for row in pixels)
  return (b'\x89PNG\r\n\x1a\n' +
          chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
          + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def _confusion_image(confusion, cell=16):
  """The confusion matrix as an image: row i, column j is white in
  proportion to the share of class i predicted as class j."""
  totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  shares = (255 * confusion / totals).astype(np.uint8)
  pixels = np.kron(shares, np.ones((cell, cell), np.uint8))
  height, width = pixels.shape
  return tf.Summary.Image(height=height, width=width, colorspace=1,
                          encoded_image_string=_png(pixels))


def report(confusion, class_names, step, checkpoint):
  """The figures of one evaluation, as a JSON-ready dict."""
  correct = np.diag(confusion)
  totals = confusion.sum(axis=1)
  return {
      'checkpoint': checkpoint,
      'global_step': int(step),
      'num_examples': int(totals.sum()),
      'correct': int(correct.sum()),
      'precision_at_1': float(correct.sum() / max(totals.sum(), 1)),
      'per_class': [
          {'class': name, 'correct': int(c), 'total': int(t),
           'accuracy': float(c / t) if t else None}
          for name, c, t in zip(class_names, correct, totals)],
      'confusion_matrix': confusion.tolist(),
  }


def print_report(figures):
  """Prints the tutorial's precision line, then per-class accuracy and the
  confusion matrix."""
  cifar10_cli.log(
      'precision @ 1 = %.3f (top-1 accuracy: %d / %d correct, checkpoint at '
      'step %d)' % (figures['precision_at_1'], figures['correct'],
                    figures['num_examples'], figures['global_step']))
  names = [c['class'] for c in figures['per_class']]
  width = max(len(n) for n in names)
  lines = ['%-*s  %7s / %-7s %s' % (width, 'class', 'correct', 'total',
                                     'accuracy')]
  for c in figures['per_class']:
    accuracy = '%.3f' % c['accuracy'] if c['total'] else '-'
    lines.append('%-*s  %7d / %-7d %s' % (width, c['class'], c['correct'],
                                          c['total'], accuracy))
  lines.append('confusion matrix (rows: true class, columns: predicted):')
  lines.append('%-*s ' % (width, '') + ' '.join('%6.6s' % n for n in names))
  for name, row in zip(names, figures['confusion_matrix']):
    lines.append('%-*s ' % (width, name) + ' '.join('%6d' % v for v in row))
  print('\n'.join(lines))
  sys.stdout.flush()


def _checkpoints(checkpoint_dir):
  """The directory's checkpoints (`cifar10_cli.listed_checkpoints`), oldest
  first, each as (path, fingerprint): a checkpoint written again under the
  same name with other values (a trainer restarted with --fresh) is another
  one to evaluate; the same values saved again (a trainer resuming) are
  not."""
  return [(path, _fingerprint(path))
          for path in cifar10_cli.listed_checkpoints(checkpoint_dir)]


def _fingerprint(checkpoint):
  """A digest of the checkpoint's index file, which holds a checksum of each
  value; None if the checkpoint is gone."""
  try:
    with tf.io.gfile.GFile(checkpoint + '.index', 'rb') as f:
      return hashlib.sha256(f.read()).hexdigest()
  except tf.errors.NotFoundError:
    return None


class _Stop(object):
  """SIGINT/SIGTERM end the watch once the evaluation under way is done; a
  second one ends the process at once."""
  signum = None

  @classmethod
  def install(cls):
    def handler(signum, unused_frame):
      cls.signum = signum
      signal.signal(signal.SIGINT, signal.default_int_handler)
      cifar10_cli.exit_on_sigterm()
    for signum in (signal.SIGINT, signal.SIGTERM):
      signal.signal(signum, handler)


def _evaluate_and_report(evaluator, checkpoint):
  step, confusion, (first_batch, seconds) = evaluator.evaluate(checkpoint)
  figures = report(confusion, evaluator.class_names, step, checkpoint)
  print_report(figures)
  cifar10_cli.log('evaluated %d images in %.2f s (%.0f images/sec; first '
                  'batch %.0f ms)' % (figures['num_examples'], seconds,
                                      figures['num_examples'] / seconds,
                                      1000 * first_batch))
  if FLAGS.report_json:
    cifar10_cli.write_json('report_json', figures)


def evaluate(data_dir):
  """Evaluates the newest checkpoint, then (without --run_once) each new one.

  Returns:
    Exit status.
  """
  evaluator = _Evaluator(FLAGS.eval_data == 'test', FLAGS.num_examples,
                         cifar10_input.class_names(data_dir))
  cifar10_cli.log('evaluating %d %s images from %s; checkpoints from %s; '
                  'summaries to %s' % (FLAGS.num_examples, FLAGS.eval_data,
                                       data_dir, FLAGS.checkpoint_dir,
                                       FLAGS.eval_dir))
  cifar10_cli.log('watch: %s' % cifar10_cli.tensorboard_hint(
      FLAGS.checkpoint_dir, FLAGS.eval_dir))
  # The newest checkpoint now, then each one written after it.
  existing = _checkpoints(FLAGS.checkpoint_dir)
  seen = set(existing)
  if FLAGS.run_once:
    pending = [cifar10_cli.latest_checkpoint(FLAGS.checkpoint_dir)]
  else:
    pending = [path for path, _ in existing[-1:]]
    if not pending:
      cifar10_cli.log('no checkpoint in --checkpoint_dir=%s yet; waiting for '
                      'one' % FLAGS.checkpoint_dir)
  if not FLAGS.run_once:
    # One evaluation and no more is what --run_once does anyway: there,
    # the signals keep their usual effect.
    _Stop.install()
  try:
    return _watch(evaluator, pending, seen)
  finally:
    evaluator.close()


def _watch(evaluator, pending, seen):
  """Evaluates `pending`, then (without --run_once) each checkpoint not in
  `seen` as it appears; returns the exit status."""
  while True:
    for checkpoint in pending:
      if _Stop.signum is not None:
        break
      try:
        _evaluate_and_report(evaluator, checkpoint)
      except tf.errors.NotFoundError:
        # The trainer keeps only the newest checkpoints.
        cifar10_cli.log('%s was deleted before it could be evaluated; '
                        'skipped' % checkpoint)
    if FLAGS.run_once:
      return 0
    deadline = time.time() + FLAGS.eval_interval_secs
    while _Stop.signum is None and time.time() < deadline:
      time.sleep(max(0.0, min(1.0, deadline - time.time())))
    if _Stop.signum is not None:
      cifar10_cli.log('%s received: stopped'
                      % signal.Signals(_Stop.signum).name)
      return 0
    new = [c for c in _checkpoints(FLAGS.checkpoint_dir) if c not in seen]
    seen.update(new)
    pending = [path for path, _ in new]


def main(argv=None):  # pylint: disable=unused-argument
  if os.path.realpath(FLAGS.eval_dir) == os.path.realpath(
      FLAGS.checkpoint_dir):
    raise cifar10_cli.UsageError(
        '--eval_dir=%s is --checkpoint_dir: TensorBoard would mix the '
        'evaluation with training, and training\'s --fresh would remove it; '
        'give it a directory of its own' % FLAGS.eval_dir)
  if (tf.io.gfile.exists(FLAGS.checkpoint_dir) and
      not tf.io.gfile.isdir(FLAGS.checkpoint_dir)):
    # Refused here, as a watching evaluator would otherwise wait for
    # checkpoints in it for ever. (One not made yet is waited for: the
    # trainer makes it.)
    raise cifar10_cli.UsageError('--checkpoint_dir=%s is a file, not a '
                                 'directory' % FLAGS.checkpoint_dir)
  data_dir = cifar10.batches_dir()
  available = cifar10_input.num_records(data_dir, FLAGS.eval_data == 'test')
  if FLAGS.num_examples > available:
    raise cifar10_cli.UsageError(
        '--num_examples=%d but the %s data in %s has %d images'
        % (FLAGS.num_examples, FLAGS.eval_data, data_dir, available))
  if FLAGS.report_json:
    cifar10_cli.check_output_file('report_json')
  cifar10_cli.make_output_dir('eval_dir', FLAGS.eval_dir)
  return evaluate(data_dir)


if __name__ == '__main__':
  cifar10_cli.run(main)
