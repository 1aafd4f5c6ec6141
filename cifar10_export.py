"""Exports a trained CIFAR-10 model as a SavedModel for TensorFlow Serving.

  python cifar10_export.py --checkpoint_dir=/tmp/cifar10_train
      --export_dir=/tmp/cifar10_model/1

The SavedModel holds the moving averages of the weights of the newest
checkpoint (those cifar10_eval.py evaluates) and one graph, tagged 'serve',
with the signature 'serving_default' (method tensorflow/serving/predict):

  inputs:  'images'         uint8 [N, 32, 32, 3], RGB pixels as in CIFAR-10 (N >= 0)
  outputs: 'probabilities'  float32 [N, 10], softmax over the classes
           'classes'        int64 [N], the most probable class

The graph is `cifar10.predict`, the one cifar10_predict.py runs, so both give
the same probabilities for the same pixels (the export is always float32;
cifar10_predict.py --use_fp16 computes in reduced precision and differs in
the third or fourth decimal). TensorFlow Serving loads numbered
versions below a base directory: export to `<base>/1`, `<base>/2`, ... and
serve `--model_base_path=<base>`. `tf.saved_model.load` loads it too.

An existing non-empty --export_dir is never overwritten. A new one is
written as a temporary directory next to it and renamed into place when
complete, so a server watching the base directory never sees half a model.
An existing empty one is kept as it is, with its owner, group and mode (a
server's may be set up for it, and its parent need not be writable): the
model is written to a temporary directory inside it and moved up when
complete, the graph (saved_model.pb) after the variables, so a server that
finds the graph finds the variables it needs. A failed or stopped (Ctrl-C,
SIGTERM) export leaves nothing behind, not even the parent directories it
made. (Remote paths such as gs://, which cannot rename directories, are
written in place.)
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import os
import shutil
import tempfile

import tensorflow.compat.v1 as tf

import cifar10
import cifar10_cli
import cifar10_input

FLAGS = tf.app.flags.FLAGS

cifar10_cli.define_checkpoint_dir()
tf.app.flags.DEFINE_string(
    'export_dir', None,
    """Directory to create with the SavedModel; it must not exist or be
    empty. For TensorFlow Serving, a numbered version such as
    /tmp/cifar10_model/1.""")
tf.app.flags.mark_flag_as_required('export_dir')
cifar10_cli.path_flag('export_dir')

SIGNATURE_KEY = (
    tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY)
INPUT_KEY = 'images'
PROBABILITIES_KEY = 'probabilities'
CLASSES_KEY = 'classes'


def check_export_dir(export_dir):
  """Refuses an export directory that would overwrite anything.

  Raises:
    ValueError: naming the directory if it is a file, holds files or cannot
      be read.
  """
  try:
    if not tf.io.gfile.exists(export_dir):
      if not cifar10_cli.is_remote(export_dir):
        # Local: the nearest existing parent must be a directory.
        parent = os.path.dirname(os.path.realpath(export_dir))
        while not os.path.exists(parent):
          parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
          raise ValueError('--export_dir=%s cannot be created: %s is a file'
                           % (export_dir, parent))
      return
    if not tf.io.gfile.isdir(export_dir):
      raise ValueError('--export_dir=%s exists and is not a directory'
                       % export_dir)
    names = tf.io.gfile.listdir(export_dir)
  except (OSError, tf.errors.OpError) as e:
    raise ValueError('cannot read --export_dir=%s: %s'
                     % (export_dir, cifar10_cli.one_line(e)))
  if names and all(name.startswith('.export-') for name in names):
    raise ValueError(
        '--export_dir=%s holds only %s, left by an export that was killed '
        'or is still running; remove it if none is running'
        % (export_dir, ', '.join(sorted(names))))
  if names:
    raise ValueError(
        '--export_dir=%s already exists and is not empty (%d entries); '
        'nothing was written: choose a new directory, e.g. the next version '
        'number for TensorFlow Serving' % (export_dir, len(names)))


def _staging_dir(export_dir, target, made):
  """An empty directory next to `target`, to be renamed to it.

  Next to it, so the rename stays on one filesystem and is atomic.

  Args:
    export_dir: the --export_dir flag.
    target: the directory it names, as an absolute path without links.
    made: list to which the parent directories this creates are added,
      innermost first.

  Raises:
    ValueError: if the parent cannot be created or written.
  """
  parent = os.path.dirname(target)
  missing = parent
  while not os.path.exists(missing):
    made.append(missing)
    missing = os.path.dirname(missing)
  try:
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(
        prefix='.%s.export-' % os.path.basename(target), dir=parent)
  except OSError as e:
    raise ValueError('cannot write --export_dir=%s: %s' % (export_dir, e))


def _make_public(directory):
  """Gives `directory` the mode a plain mkdir would have.

  mkdtemp makes it private (0700); after the rename it is the model
  directory, which a server running as another user must read.
  """
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(directory, 0o777 & ~umask)


def build_signature():
  """Builds the serving graph in the default graph.

  Returns:
    (signature_def, dict checkpoint name -> variable to restore).
  """
  size = cifar10_input.ORIGINAL_IMAGE_SIZE
  images = tf.placeholder(tf.uint8, [None, size, size, 3], name=INPUT_KEY)
  # Float32 (main refuses --use_fp16): a served model should not depend on
  # the machine that exported it.
  probabilities = cifar10.predict(images, dtype=tf.float32)  # [N, CLASSES]
  classes = tf.argmax(probabilities, 1, name=CLASSES_KEY)  # int64 [N]
  signature = tf.saved_model.signature_def_utils.build_signature_def(
      inputs={INPUT_KEY: _tensor_info(images)},
      outputs={PROBABILITIES_KEY: _tensor_info(probabilities),
               CLASSES_KEY: _tensor_info(classes)},
      method_name=tf.saved_model.signature_constants.PREDICT_METHOD_NAME)
  return signature, cifar10.variables_to_restore()


def _tensor_info(tensor):
  """The signature's description of `tensor`: name, dtype and shape.

  What the deprecated `predict_signature_def` helper builds, without its
  deprecation warning on every export.
  """
  return tf.TensorInfo(name=tensor.name,
                       dtype=tensor.dtype.as_datatype_enum,
                       tensor_shape=tensor.shape.as_proto())


def write_saved_model(checkpoint, path):
  """Writes the SavedModel with the averaged weights of `checkpoint`.

  Args:
    checkpoint: checkpoint prefix.
    path: directory that does not exist or is empty.
  """
  with tf.Graph().as_default():
    signature, var_map = build_signature()
    cifar10_cli.check_checkpoint(checkpoint, var_map)
    with tf.Session(config=cifar10_cli.session_config()) as sess:
      # The model's variables take the moving averages' values, and the
      # SavedModel saves them under the model's own names.
      tf.train.Saver(var_map).restore(sess, checkpoint)
      builder = tf.saved_model.Builder(path)
      # TensorFlow's INFO lines would name the temporary directory as where
      # the model was written; main() names --export_dir once it is there.
      verbosity = tf.logging.get_verbosity()
      tf.logging.set_verbosity(tf.logging.WARN)
      try:
        builder.add_meta_graph_and_variables(
            sess, [tf.saved_model.tag_constants.SERVING],
            signature_def_map={SIGNATURE_KEY: signature},
            # The training code pins variables to the CPU; a server places
            # ops on its own devices.
            clear_devices=True, strip_default_attrs=True)
        builder.save()
      finally:
        tf.logging.set_verbosity(verbosity)


def export(checkpoint, export_dir):
  """Writes the SavedModel to `export_dir`, complete or not at all."""
  check_export_dir(export_dir)
  if cifar10_cli.is_remote(export_dir):
    # Remote filesystems have no atomic directory rename: write in place.
    write_saved_model(checkpoint, export_dir)
    return
  # The directory the flag leads to: it may name a link to one, or '.'.
  target = os.path.realpath(export_dir)
  if os.path.isdir(target):
    _export_into(checkpoint, export_dir, target)
  else:
    _export_beside(checkpoint, export_dir, target)


def _export_into(checkpoint, export_dir, target):
  """Writes the SavedModel into the existing empty directory `target`."""
  try:
    staging = tempfile.mkdtemp(prefix='.export-', dir=target)
  except OSError as e:
    raise ValueError('cannot write --export_dir=%s: %s' % (export_dir, e))
  entries = []
  try:
    write_saved_model(checkpoint, staging)
    others = set(os.listdir(target)) - {os.path.basename(staging)}
    if others:
      raise ValueError('cannot write --export_dir=%s: %d other entries '
                       'appeared in it meanwhile' % (export_dir, len(others)))
    # The graph last: a server that finds it finds the variables too.
    entries = sorted(os.listdir(staging),
                     key=lambda entry: entry == 'saved_model.pb')
    for entry in entries:
      try:
        os.rename(os.path.join(staging, entry), os.path.join(target, entry))
      except OSError as e:
        raise ValueError('cannot write --export_dir=%s: %s'
                         % (export_dir, e))
  except BaseException:
    # Failed or stopped, even right after a rename: whatever was moved goes
    # too (the directory was empty), the graph first.
    for entry in reversed(entries):
      path = os.path.join(target, entry)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      elif os.path.exists(path):
        os.remove(path)
    raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _export_beside(checkpoint, export_dir, target):
  """Writes the SavedModel next to `target`, which does not exist, and
  renames it to `target`."""
  made = []
  staging = None
  try:
    staging = _staging_dir(export_dir, target, made)
    _make_public(staging)
    write_saved_model(checkpoint, staging)
    try:
      # Fails if a directory appeared there meanwhile, unless empty.
      os.rename(staging, target)
    except OSError as e:
      raise ValueError('cannot write --export_dir=%s: %s' % (export_dir, e))
  finally:
    # Left when anything failed: our own temporary directory, and the
    # parents made for it, while empty (after the rename the innermost
    # holds the model, so none is removed).
    if staging is not None:
      shutil.rmtree(staging, ignore_errors=True)
    for directory in made:
      try:
        os.rmdir(directory)
      except OSError:
        break


def main(argv=None):  # pylint: disable=unused-argument
  if FLAGS.use_fp16:
    raise cifar10_cli.UsageError(
        '--use_fp16: the export is always float32, so that a served model '
        'does not depend on the machine that exported it (cifar10_predict.py '
        '--use_fp16 computes in reduced precision)')
  checkpoint = cifar10_cli.latest_checkpoint(FLAGS.checkpoint_dir)
  # A stopped export, too, leaves nothing behind.
  cifar10_cli.exit_on_sigterm()
  export(checkpoint, FLAGS.export_dir)
  cifar10_cli.log('exported %s (step %d) to %s'
                  % (checkpoint, cifar10_cli.checkpoint_step(checkpoint),
                     FLAGS.export_dir))
  cifar10_cli.log("signature '%s': %s uint8 [N, 32, 32, 3] -> %s float32 "
                  '[N, %d], %s int64 [N]'
                  % (SIGNATURE_KEY, INPUT_KEY, PROBABILITIES_KEY,
                     cifar10.NUM_CLASSES, CLASSES_KEY))
  return 0


if __name__ == '__main__':
  cifar10_cli.run(main)
