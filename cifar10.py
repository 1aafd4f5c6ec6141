"""The CIFAR-10 model of the TensorFlow tutorial, on tensorflow.compat.v1.

Call sequence:

  # Training inputs, and inputs for evaluation.
  images, labels = distorted_inputs()
  images, labels = inputs(eval_data=True)

  # The model's prediction (logits, before softmax).
  logits = inference(images)

  # Total loss: cross entropy plus weight decay.
  total_loss = loss(logits, labels)

  # One step of training: gradients, learning-rate schedule, moving averages
  # and summaries.
  train_op = train(total_loss, global_step)

Several towers (one per GPU, see cifar10_train.py) call `tower_loss` and
`compute_gradients` each, `average_gradients` over them, and pass the result
to `train`, so the schedule, optimizer, moving averages and summaries are
defined here once for every trainer.

Variable names are the tutorial's, so its checkpoints restore here and the
other way round.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

import cifar10_cli
import cifar10_download
import cifar10_input

FLAGS = tf.app.flags.FLAGS

# Flags shared by every script; parsed by the script's main, never here.
tf.app.flags.DEFINE_integer('batch_size', 128,
                            """Number of images to process in a batch.""")
tf.app.flags.DEFINE_string('data_dir', '/tmp/cifar10_data',
                           """Path to the CIFAR-10 data directory.""")
cifar10_cli.path_flag('data_dir')
tf.app.flags.DEFINE_boolean(
    'use_fp16', False,
    """Mixed precision: bfloat16 compute on CPUs, float16 with loss scaling
    on GPUs; weights, moving averages and checkpoints stay float32.""")

tf.app.flags.DEFINE_string(
    'data_url', cifar10_download.DATA_URL,
    """Where to get cifar-10-binary.tar.gz: the official address or a
    mirror (https://, http:// or file://).""")
tf.app.flags.DEFINE_string(
    'data_sha256', cifar10_download.DATA_SHA256,
    """SHA-256 the downloaded tarball must have (the official tarball's by
    default, which a mirror of it has too).""")


def _checked_by(check):
  """A flag validator that raises `check`'s DownloadError as the flag's
  error, so that it names the flag and exits 2 before anything runs."""
  def validator(value):
    try:
      check(value)
    except cifar10_download.DownloadError as e:
      raise tf.app.flags.ValidationError(str(e))
    return True
  return validator


tf.app.flags.register_validator('data_url',
                                _checked_by(cifar10_download.check_url))
tf.app.flags.register_validator('data_sha256',
                                _checked_by(cifar10_download.check_sha256))

# Global constants describing the CIFAR-10 data set.
IMAGE_SIZE = cifar10_input.IMAGE_SIZE
NUM_CLASSES = cifar10_input.NUM_CLASSES
NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN
NUM_EXAMPLES_PER_EPOCH_FOR_EVAL = cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_EVAL

# Constants describing the training process.
MOVING_AVERAGE_DECAY = 0.9999     # The decay to use for the moving average.
NUM_EPOCHS_PER_DECAY = 350.0      # Epochs after which learning rate decays.
LEARNING_RATE_DECAY_FACTOR = 0.1  # Learning rate decay factor.
INITIAL_LEARNING_RATE = 0.1       # Initial learning rate.
LOSS_AVERAGE_DECAY = 0.9          # The decay of the losses' moving averages.

# The tutorial's local response normalization (see _lrn).
LRN_DEPTH_RADIUS = 4              # Channels on each side in the window.
LRN_BIAS = 1.0                    # Added to the scaled sum of squares.
LRN_ALPHA = 0.001 / 9.0           # Scale of the sum of squares.
LRN_BETA = 0.75                   # Exponent of the normalization (_lrn
                                  # computes this power with square roots).

# The tutorial's max pooling: 3x3 windows, stride 2.
POOL_KSIZE = [1, 3, 3, 1]         # Window (NHWC).
POOL_STRIDES = [1, 2, 2, 1]       # Stride (NHWC).
POOL_PADDING = 'SAME'             # Padding.

# Dynamic loss scaling for float16 (GPU) training.
INITIAL_LOSS_SCALE = 2.0 ** 15    # Starting scale of the float16 loss.
LOSS_SCALE_GROWTH_STEPS = 2000    # Finite steps before the scale doubles.

# The message of the error a training step raises on a NaN or infinite loss
# or gradient.
NON_FINITE_LOSS = 'the loss or its gradients are not finite'

# If a model is trained with multiple GPUs, prefix all Op names with
# tower_name to differentiate the operations. Summaries drop this prefix.
TOWER_NAME = 'tower'

DATA_URL = cifar10_download.DATA_URL


def _strip_tower(name):
  """'tower_1/local3/weight_loss' -> 'local3/weight_loss'."""
  return re.sub('^%s_[0-9]*/' % TOWER_NAME, '', name)


def scalar_summary(tag, value):
  """Adds a scalar summary whose tag is exactly `tag`.

  `tf.summary.scalar` derives the tag from the name scope, which puts
  tower prefixes and '_1' suffixes in TensorBoard's tag list.
  """
  tf.add_to_collection(tf.GraphKeys.SUMMARIES, tf.raw_ops.ScalarSummary(
      tags=tag, values=tf.cast(value, tf.float32)))


def histogram_summary(tag, values):
  """Adds a histogram summary whose tag is exactly `tag`.

  Non-finite values count as zeros: the histogram op fails on a NaN, which
  would replace the trainer's diverged-loss message with an op error.
  """
  values = tf.cast(values, tf.float32)
  values = tf.where(tf.is_finite(values), values, tf.zeros_like(values))
  tf.add_to_collection(tf.GraphKeys.SUMMARIES, tf.raw_ops.HistogramSummary(
      tag=tag, values=values))


def _activation_summary(x, layer):
  """Histogram and sparsity (fraction of zeros) summaries of an activation.

  Towers build the same layers; only the first tower (or a graph without
  towers) writes them, so each tag appears once.

  Args:
    x: activation tensor of any shape.
    layer: the layer's name, e.g. 'conv1'.
  """
  scope = tf.get_default_graph().get_name_scope()
  if re.match('%s_[1-9][0-9]*(/|$)' % TOWER_NAME, scope):
    return
  histogram_summary(layer + '/activations', x)
  scalar_summary(layer + '/sparsity', tf.nn.zero_fraction(x))


def compute_dtype(on_gpu=None):
  """The dtype the layers compute in.

  float32 unless --use_fp16: then float16 where the model runs on GPUs
  (with loss scaling, see `compute_gradients`) and bfloat16 on CPUs, whose
  range is float32's, so it needs no loss scaling.

  Args:
    on_gpu: whether the towers run on GPUs; None asks TensorFlow.
  """
  if not FLAGS.use_fp16:
    return tf.float32
  if on_gpu is None:
    on_gpu = bool(tf.config.list_physical_devices('GPU'))
  return tf.float16 if on_gpu else tf.bfloat16


def _variable_on_cpu(name, shape, initializer):
  """Creates, or reuses in a tower, a float32 variable on the CPU.

  Weights stay float32 whatever the compute dtype: they are the master copy
  that the optimizer and the moving averages update, and what checkpoints
  hold.

  Args:
    name: name of the variable.
    shape: list of ints.
    initializer: initializer for the variable.

  Returns:
    The float32 variable.
  """
  with tf.device('/cpu:0'):
    return tf.get_variable(name, shape, initializer=initializer,
                           dtype=tf.float32)


def _variable_with_weight_decay(name, shape, stddev, wd):
  """A truncated-normal variable, with an L2 weight-decay term if `wd`.

  The decay term `wd * l2_loss(var)` joins the 'losses' collection, where
  `loss` adds it to the total.

  Args:
    name: name of the variable.
    shape: list of ints.
    stddev: standard deviation of the truncated normal.
    wd: weight-decay coefficient, or None for none.

  Returns:
    The variable.
  """
  var = _variable_on_cpu(
      name, shape,
      tf.truncated_normal_initializer(stddev=stddev))
  if wd is not None:
    weight_decay = tf.multiply(tf.nn.l2_loss(var), wd, name='weight_loss')
    tf.add_to_collection('losses', weight_decay)
  return var


def maybe_download_and_extract():
  """Downloads and extracts the data set into --data_dir unless it is there.

  Returns:
    The directory with the `.bin` files.

  Raises:
    cifar10_cli.UsageError: see `batches_dir`.
  """
  batches_dir()  # Refuses a --data_dir one level too deep before anything.
  return cifar10_download.maybe_download_and_extract(
      FLAGS.data_dir, FLAGS.data_url, FLAGS.data_sha256)


def batches_dir():
  """The directory with the `.bin` files: <--data_dir>/cifar-10-batches-bin.

  Raises:
    cifar10_cli.UsageError: if --data_dir is that directory itself (it holds
      the `.bin` files and no cifar-10-batches-bin/), a slip that would
      otherwise download the data set again, into it.
  """
  path = os.path.join(FLAGS.data_dir, cifar10_input.BATCHES_DIR)
  if not tf.io.gfile.exists(path) and any(
      tf.io.gfile.exists(os.path.join(FLAGS.data_dir, name))
      for name in cifar10_input.TRAIN_FILES + cifar10_input.EVAL_FILES):
    raise cifar10_cli.UsageError(
        '--data_dir=%s holds the CIFAR-10 .bin files itself: give the '
        'directory above it, --data_dir=%s' % (
            FLAGS.data_dir,
            os.path.dirname(os.path.abspath(FLAGS.data_dir))))
  return path


def distorted_inputs():
  """Distorted training batches from --data_dir and --batch_size.

  Returns:
    images: float32 [batch_size, IMAGE_SIZE, IMAGE_SIZE, 3].
    labels: int32 [batch_size].

  Raises:
    ValueError: if the data is missing or has the wrong size.
  """
  return cifar10_input.distorted_inputs(
      data_dir=batches_dir(),
      batch_size=FLAGS.batch_size)


def inputs(eval_data, num_examples=None, repeat=False):
  """Evaluation batches from --data_dir and --batch_size.

  Args:
    eval_data: True for the test set, False for the training set.
    num_examples: read only this many images (all if None).
    repeat: serve the batches again, without end (see
      `cifar10_input.inputs`).

  Returns:
    images: float32 [<= batch_size, IMAGE_SIZE, IMAGE_SIZE, 3].
    labels: int32 [<= batch_size].

  Raises:
    ValueError: if the data is missing or has the wrong size.
  """
  return cifar10_input.inputs(
      eval_data=eval_data,
      data_dir=batches_dir(),
      batch_size=FLAGS.batch_size, num_examples=num_examples, repeat=repeat)


def _conv(x, in_depth, bias_init):
  """5x5 SAME convolution to 64 channels, in the open variable scope.

  Returns:
    (convolution [batch, height, width, 64], biases [64]), both in x's
    dtype; the caller adds the biases.
  """
  kernel = _variable_with_weight_decay('weights', [5, 5, in_depth, 64],
                                       stddev=5e-2, wd=None)
  biases = _variable_on_cpu('biases', [64], tf.constant_initializer(bias_init))
  conv = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), [1, 1, 1, 1],
                      padding='SAME')
  return conv, tf.cast(biases, x.dtype)


def _fully_connected(x, units, stddev, wd, bias_init, relu=True):
  """x @ weights + biases (ReLU if `relu`), in the open variable scope."""
  scope = tf.get_variable_scope()
  weights = _variable_with_weight_decay('weights', [x.shape[1], units],
                                        stddev=stddev, wd=wd)
  biases = _variable_on_cpu('biases', [units],
                            tf.constant_initializer(bias_init))
  out = tf.matmul(x, tf.cast(weights, x.dtype))
  if x.dtype == tf.float32:
    out = tf.nn.bias_add(out, biases)  # oneDNN fuses it into the matmul.
  else:
    # A plain add: BiasAddGrad sums the batch's gradients in bfloat16 on
    # CPUs (softmax_linear's bias gradient was 6% off at batch 128); the
    # add's gradient, a Sum, adds in float32 and rounds once.
    out += tf.cast(biases, x.dtype)
  out = tf.nn.relu(out, name=scope.name) if relu else tf.identity(
      out, name=scope.name)
  _activation_summary(out, scope.name)
  return out


def _channel_window_sum(values, window, bias=None):
  """For each channel d, the weighted sum of `values` over channels d-4..d+4.

  One matmul of the flattened [pixels, depth] values with the band matrix
  `window` [depth, depth], plus `bias` [depth] if given (a bias_add, which
  oneDNN fuses into the matmul).
  """
  depth = values.shape[-1]
  sums = tf.matmul(tf.reshape(values, [-1, depth]), window)
  if bias is not None:
    sums = tf.nn.bias_add(sums, bias)
  return tf.reshape(sums, tf.shape(values))


def _lrn(x, name, dtype=None):
  """The tutorial's local response normalization, in float32.

    y[..., d] = x[..., d] / (LRN_BIAS + LRN_ALPHA * s[..., d]) ** LRN_BETA

  where s[..., d] sums x[..., k] ** 2 over |k - d| <= LRN_DEPTH_RADIUS: what
  tf.nn.lrn computes (to float rounding), written as a band-matrix matmul
  with its gradient spelled out. On two AVX-512 cores, at norm1's size and
  batch 128, tf.nn.lrn takes about 12 ms forward and backward (its LRNGrad
  kernel most of it), this about 2.4 ms. The constant factors live in the
  band matrices, to save passes over the data.

  Always float32: TensorFlow has no bfloat16 LRN, and normalization is where
  reduced precision hurts most.

  Args:
    x: [batch, height, width, depth] activations of any float dtype.
    name: name of the output op.
    dtype: dtype of the result; None for x's.

  Returns:
    Tensor of x's shape.
  """
  depth = int(x.shape[-1])
  channel = np.arange(depth)
  band = np.abs(channel[:, None] - channel[None, :]) <= LRN_DEPTH_RADIUS
  alpha_band = tf.constant(LRN_ALPHA * band, dtype=tf.float32)
  grad_band = tf.constant(2 * LRN_ALPHA * LRN_BETA * band, dtype=tf.float32)
  bias = tf.constant(LRN_BIAS, shape=[depth])

  @tf.custom_gradient
  def normalize(inputs):
    scale = _channel_window_sum(tf.square(inputs), alpha_band, bias)
    # scale ** -0.75 as scale ** -0.5 * scale ** -0.25: on CPUs TensorFlow's
    # pow kernel is five times slower, exp(log(scale) * -0.75) (how its own
    # LRN kernel does it) a third slower.
    inverse_root = tf.rsqrt(scale)
    factor = inverse_root * tf.sqrt(inverse_root)
    outputs = inputs * factor

    def grad(d_outputs):
      # d y_d / d x_k = factor_d [d == k]
      #                 - 2 alpha beta x_d x_k scale_d ** (-beta - 1)
      # for k in d's window, and the window is symmetric.
      return d_outputs * factor - inputs * _channel_window_sum(
          d_outputs * outputs / scale, grad_band)

    return outputs, grad

  y = normalize(tf.cast(x, tf.float32))
  if (dtype or x.dtype) == tf.float32:
    return tf.identity(y, name=name)
  return tf.cast(y, dtype or x.dtype, name=name)


def _max_pool(x, name):
  """3x3 max pooling with stride 2."""
  return tf.nn.max_pool(x, ksize=POOL_KSIZE, strides=POOL_STRIDES,
                        padding=POOL_PADDING, name=name)


def _bias_relu_pool(conv, biases, layer, name):
  """max_pool(relu(conv + biases)), with a cheaper gradient.

  The forward pass is the tutorial's: oneDNN fuses the bias and ReLU into
  the convolution, then pools. (The bias is a plain add, not bias_add:
  oneDNN would also fuse the bias gradient into the filter gradient, which
  makes that op three times slower on CPUs.)

  Going back, max pooling hands each pooled value's gradient to its
  window's maximum, where the ReLU passes it exactly when that maximum is
  positive. So the ReLU's mask applies to the quarter-size pooled gradient,
  and the bias gradient, the sum of the scattered gradient, is the sum of
  the pooled one. Equal to the automatic gradient (see test_model.py), the
  bias gradient up to the order of its sum.

  Args:
    conv: [batch, height, width, depth] convolution output.
    biases: [depth] biases, in conv's dtype.
    layer: name of the layer, for the ReLU's op and activation summaries.
    name: name of the pooled output.

  Returns:
    [batch, height / 2, width / 2, depth] pooled activations.
  """
  @tf.custom_gradient
  def bias_relu_pool(conv, biases):
    # Named '<layer>/<layer>' (in the tower's scope) as in the tutorial.
    outer = tf.get_default_graph().get_name_scope()
    with tf.name_scope('/'.join(filter(None, [outer, layer])) + '/'):
      activation = tf.nn.relu(conv + biases, name=layer)
    _activation_summary(activation, layer)
    pooled = _max_pool(activation, name)

    def grad(d_pooled):
      d_pooled = tf.raw_ops.ReluGrad(gradients=d_pooled, features=pooled)
      d_conv = tf.raw_ops.MaxPoolGrad(
          orig_input=activation, orig_output=pooled, grad=d_pooled,
          ksize=POOL_KSIZE, strides=POOL_STRIDES, padding=POOL_PADDING)
      return d_conv, tf.reduce_sum(d_pooled, axis=[0, 1, 2])

    return pooled, grad

  return bias_relu_pool(conv, biases)


def inference(images, dtype=None):
  """Builds the CIFAR-10 model.

  Any batch size works: the flattening size comes from the tensor.

  Args:
    images: float [batch, IMAGE_SIZE, IMAGE_SIZE, 3], from `distorted_inputs`
      or `inputs`.
    dtype: compute dtype; None for `compute_dtype()`.

  Returns:
    float32 logits [batch, NUM_CLASSES] (no softmax).
  """
  dtype = dtype or compute_dtype()
  x = tf.cast(images, dtype)
  with tf.variable_scope('conv1'):
    conv, biases = _conv(x, 3, 0.0)                  # [batch, 24, 24, 64]
  pool1 = _bias_relu_pool(conv, biases, 'conv1', 'pool1')  # [b, 12, 12, 64]
  norm1 = _lrn(pool1, 'norm1')
  with tf.variable_scope('conv2') as scope:
    conv, biases = _conv(norm1, 64, 0.1)
    # A plain add, as in _bias_relu_pool.
    conv2 = tf.nn.relu(conv + biases, name=scope.name)
    _activation_summary(conv2, scope.name)           # [batch, 12, 12, 64]
  # Pooled before the cast back to the compute dtype: the same maximum on a
  # quarter of the values.
  norm2 = _lrn(conv2, 'norm2', tf.float32)
  pool2 = _max_pool(norm2, 'pool2')                  # [batch, 6, 6, 64]
  flat = tf.reshape(tf.cast(pool2, dtype),
                    [-1, pool2.shape[1:].num_elements()])
  with tf.variable_scope('local3'):
    local3 = _fully_connected(flat, 384, 0.04, 0.004, 0.1)
  with tf.variable_scope('local4'):
    local4 = _fully_connected(local3, 192, 0.04, 0.004, 0.1)
  with tf.variable_scope('softmax_linear'):
    logits = _fully_connected(local4, NUM_CLASSES, 1 / 192.0, None, 0.0,
                              relu=False)
  return tf.cast(logits, tf.float32)


def _add_cross_entropy(logits, labels):
  """Adds the mean cross entropy to the 'losses' collection."""
  labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits, name='cross_entropy_per_example')
  tf.add_to_collection('losses',
                       tf.reduce_mean(cross_entropy, name='cross_entropy'))


def loss(logits, labels):
  """Mean cross entropy plus the weight-decay terms.

  Adds the cross entropy to the 'losses' collection, where the weight-decay
  terms of `inference` already are, and sums the collection.

  Args:
    logits: float32 [batch, NUM_CLASSES] from `inference`.
    labels: integer [batch] (or [batch, 1]) class indices.

  Returns:
    Scalar float32 total loss, named 'total_loss'.
  """
  _add_cross_entropy(logits, labels)
  return tf.add_n(tf.get_collection('losses'), name='total_loss')


def tower_loss(scope, images, labels):
  """Inference and loss for one tower, built in the name scope `scope`.

  Args:
    scope: the tower's name scope, e.g. 'tower_0/'; only the terms of the
      'losses' collection under it are summed, so tower_1 does not add
      tower_0's cross entropy.
    images: float32 [batch, IMAGE_SIZE, IMAGE_SIZE, 3].
    labels: int32 [batch].

  Returns:
    Scalar total loss of the tower.
  """
  _add_cross_entropy(inference(images), labels)
  return tf.add_n(tf.get_collection('losses', scope), name='total_loss')


def _loss_scale():
  """The float16 loss scale: a local variable, so checkpoints never hold it
  and stay interchangeable with float32 training.

  Placed with the model's ops, outside any device function: on a cluster,
  each worker adapts its own scale instead of sharing one on the parameter
  servers.
  """
  with tf.device(None), tf.variable_scope('loss_scale', reuse=tf.AUTO_REUSE):
    scale = tf.get_variable(
        'scale', initializer=INITIAL_LOSS_SCALE, trainable=False,
        collections=[tf.GraphKeys.LOCAL_VARIABLES])
    good_steps = tf.get_variable(
        'good_steps', initializer=0, dtype=tf.int32, trainable=False,
        collections=[tf.GraphKeys.LOCAL_VARIABLES])
  return scale, good_steps


def compute_gradients(total_loss, dtype=None):
  """Gradients of `total_loss` with respect to the trainable variables.

  With float16 compute the loss is scaled up before differentiation, so
  small gradients do not flush to zero, and the gradients scaled back down.

  Args:
    total_loss: scalar float32 loss.
    dtype: the compute dtype the loss was built with (None: compute_dtype()).

  Returns:
    List of (gradient, variable) pairs, float32.
  """
  variables = tf.trainable_variables()
  if (dtype or compute_dtype()) != tf.float16:
    return list(zip(tf.gradients(total_loss, variables), variables))
  scale, _ = _loss_scale()
  grads = tf.gradients(total_loss * scale, variables)
  return [(g / scale, v) for g, v in zip(grads, variables)]


def _all_finite(grads_and_vars):
  """Scalar bool: whether every gradient value is finite. (Not through their
  global norm, whose sum of squares overflows for large finite values.)"""
  return tf.reduce_all([tf.reduce_all(tf.is_finite(g))
                        for g, _ in grads_and_vars if g is not None])


def _apply_loss_scale(grads_and_vars):
  """Zeroes non-finite float16 gradients and adapts the loss scale.

  An overflow halves the scale, and the step is to be skipped;
  LOSS_SCALE_GROWTH_STEPS finite steps in a row double it.

  Returns:
    grads_and_vars: to apply; all zero when the step is skipped.
    update: op that updates the scale.
    finite: scalar bool, whether the gradients are finite (False: skip).
    stuck: scalar bool, non-finite gradients at a scale of 1 already, which
      halving cannot cure: divergence, not overflow.
  """
  scale, good_steps = _loss_scale()
  # One read, before the update, for every use below.
  current = scale.read_value()
  finite = _all_finite(grads_and_vars)
  safe = [(tf.where(finite, g, tf.zeros_like(g)), v)
          for g, v in grads_and_vars]
  doubled = current * 2.0
  # Never to infinity, which halving would not bring back.
  grow = tf.logical_and(
      tf.logical_and(finite, good_steps + 1 >= LOSS_SCALE_GROWTH_STEPS),
      tf.is_finite(doubled))
  new_scale = tf.where(finite, tf.where(grow, doubled, current),
                       tf.maximum(current / 2.0, 1.0))
  new_good = tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                      good_steps + 1, 0)
  update = tf.group(scale.assign(new_scale), good_steps.assign(new_good))
  stuck = tf.logical_and(tf.logical_not(finite), current <= 1.0)
  return safe, update, finite, stuck


def average_gradients(tower_grads):
  """Averages each variable's gradient over the towers.

  Args:
    tower_grads: one list of (gradient, variable) per tower, all lists over
      the same variables in the same order.

  Returns:
    One list of (averaged gradient, variable).
  """
  if len(tower_grads) == 1:
    return tower_grads[0]
  averaged = []
  for grad_and_vars in zip(*tower_grads):
    grad = tf.add_n([g for g, _ in grad_and_vars]) / len(grad_and_vars)
    averaged.append((grad, grad_and_vars[0][1]))
  return averaged


def learning_rate(global_step, examples_per_step):
  """The tutorial's schedule, counted in examples actually consumed.

  0.1, times 0.1 every NUM_EPOCHS_PER_DECAY epochs (staircase). The decay
  interval is in steps of `examples_per_step` images, so the schedule is the
  same in epochs for any batch size, number of towers or workers.

  Args:
    global_step: integer scalar tensor.
    examples_per_step: training images consumed by one global step.

  Returns:
    Scalar float32 learning rate.
  """
  # The decays so far, by integer division: tf.train.exponential_decay
  # divides in float32, which Grappler turns into a multiplication by the
  # reciprocal, so for some intervals (182291 steps, at 96 images a step)
  # it decayed one step late, and past 2**24 steps it rounded the step.
  decays = tf.cast(global_step // decay_steps(examples_per_step), tf.float32)
  return tf.multiply(INITIAL_LEARNING_RATE,
                     tf.pow(LEARNING_RATE_DECAY_FACTOR, decays),
                     name='learning_rate')


def decay_steps(examples_per_step):
  """Global steps between two decays of the learning rate: the steps of
  `examples_per_step` images that make NUM_EPOCHS_PER_DECAY epochs."""
  num_batches_per_epoch = NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN / examples_per_step
  return max(1, int(num_batches_per_epoch * NUM_EPOCHS_PER_DECAY))


def _add_loss_summaries(tower_losses):
  """Moving averages (decay 0.9) of the losses and their summaries.

  Args:
    tower_losses: dict loss name (without tower prefix) -> scalar tensors
      of that loss, one per tower; each name is summarized at the towers'
      mean, raw as '<name>_raw' and averaged as '<name>'.

  Returns:
    Op that updates the moving averages.
  """
  averages = tf.train.ExponentialMovingAverage(LOSS_AVERAGE_DECAY, name='avg')
  means = []
  for name in sorted(tower_losses):
    values = tower_losses[name]
    if len(values) == 1 and values[0].op.name == name:
      means.append(values[0])  # Built outside any tower scope.
    else:
      # Named as in the tutorial's single-tower graph, so the averages are
      # '<name>/avg' in checkpoints whatever the number of towers.
      means.append(tf.identity(tf.add_n(values) / len(values), name=name))
  with tf.device('/cpu:0'):  # The averages, with the other variables.
    loss_averages_op = averages.apply(means)
  # Read after this step's update: otherwise each average is read before or
  # after it, whichever the executor happens to run first.
  with tf.control_dependencies([loss_averages_op]):
    for name, mean in zip(sorted(tower_losses), means):
      scalar_summary(name + '_raw', mean)
      scalar_summary(name, averages.average(mean).read_value())
  return loss_averages_op


def tower_loss_terms(total_losses):
  """The loss terms of each tower, grouped by name without the tower prefix.

  Args:
    total_losses: the total loss of each tower, from `loss`.

  Returns:
    dict such as {'cross_entropy': [...], 'local3/weight_loss': [...],
    'total_loss': [...]}, one tensor per tower in each list.
  """
  terms = {}
  for total in total_losses:
    for term in list(total.op.inputs) + [total]:
      terms.setdefault(_strip_tower(term.op.name), []).append(term)
  return terms


def train(total_loss, global_step, grads_and_vars=None,
          examples_per_step=None, total_losses=None, wrap_optimizer=None):
  """Builds one training step.

  Learning-rate schedule and summary, plain gradient descent, moving averages
  of the losses (0.9) and of all trainable variables (0.9999, with the
  global step as `num_updates`), histograms of variables and gradients. With
  float16, a step whose gradients overflow is skipped (see
  `_apply_loss_scale`).

  Args:
    total_loss: scalar loss from `loss` (single tower).
    global_step: integer variable counting the training steps.
    grads_and_vars: gradients to apply, e.g. averaged over towers; None
      differentiates `total_loss`.
    examples_per_step: images one step consumes; None for --batch_size.
    total_losses: with towers, the total loss of each (for the loss
      summaries); None means [total_loss].
    wrap_optimizer: None, or a function (optimizer, variable_averages,
      variables) -> optimizer that applies the gradients instead of the plain
      gradient descent `optimizer`, e.g. a `tf.train.SyncReplicasOptimizer`
      around it. The returned optimizer takes over the moving averages of the
      weights: it must apply `variable_averages` to `variables` once per
      global step (SyncReplicasOptimizer does, on the chief, when given them).

  Returns:
    The train op.
  """
  examples_per_step = examples_per_step or FLAGS.batch_size
  lr = learning_rate(global_step, examples_per_step)
  scalar_summary('learning_rate', lr)
  if grads_and_vars is None:
    grads_and_vars = compute_gradients(total_loss)
  # A NaN or infinite loss or gradient fails the step before any variable
  # changes, so diverged weights are never applied, let alone saved. (Float16
  # gradients that overflow are the loss scale's business: it skips the step,
  # unless the scale is down to 1 already.)
  checked = list(total_losses or [total_loss])
  updates = []
  finite = None  # Whether to apply this step; None: always.
  if compute_dtype() == tf.float16:
    grads_and_vars, scale_update, finite, stuck = _apply_loss_scale(
        grads_and_vars)
    updates.append(scale_update)
    checked.append(tf.where(stuck, np.inf, 0.0))
  else:
    checked.append(tf.where(_all_finite(grads_and_vars), 0.0, np.inf))
  finite_check = tf.debugging.assert_all_finite(tf.stack(checked),
                                                NON_FINITE_LOSS)
  with tf.control_dependencies([finite_check]):
    loss_averages_op = _add_loss_summaries(
        tower_loss_terms(total_losses or [total_loss]))
    grads_and_vars = [(None if g is None else tf.identity(g), v)
                      for g, v in grads_and_vars]

  opt = tf.train.GradientDescentOptimizer(lr)
  if wrap_optimizer is None:
    with tf.control_dependencies([loss_averages_op]):
      if finite is None:
        apply_gradient_op = opt.apply_gradients(grads_and_vars,
                                                global_step=global_step)
      else:
        # A skipped step's gradients are zero, so the weights stay exactly
        # as they are, and it is not counted.
        with tf.control_dependencies([opt.apply_gradients(grads_and_vars)]):
          apply_gradient_op = global_step.assign_add(
              tf.cast(finite, global_step.dtype))
  else:
    # In synchronous cluster training the chief applies the workers'
    # gradients together: a worker's skipped step gives zeros, and counts.
    opt = wrap_optimizer(opt, _weight_averages(global_step),
                         tf.trainable_variables())
    # No control dependency around apply_gradients here: it may build ops
    # that run apart from the train op (SyncReplicasOptimizer's update on the
    # chief), which would then compute a batch's losses each time they run.
    apply_gradient_op = opt.apply_gradients(grads_and_vars,
                                            global_step=global_step)
    updates.append(loss_averages_op)

  # The weights after this step's update, like their moving averages.
  with tf.control_dependencies([apply_gradient_op]):
    for var in tf.trainable_variables():
      histogram_summary(var.op.name, var.read_value())
  for grad, var in grads_and_vars:
    if grad is not None:
      histogram_summary(var.op.name + '/gradients', grad)

  if wrap_optimizer is None:
    # Built after the global step's update, which its decay reads.
    with tf.control_dependencies([apply_gradient_op]):
      updates.append(_weight_averages(global_step, finite).apply(
          tf.trainable_variables()))
  else:
    updates.append(apply_gradient_op)
  with tf.control_dependencies(updates):
    return tf.no_op(name='train')


def _weight_averages(global_step, finite=None):
  """The moving averages of the weights: decay MOVING_AVERAGE_DECAY, less
  over the first steps, min(decay, (1 + step) / (10 + step)), as
  ExponentialMovingAverage does with `num_updates`.

  Args:
    global_step: integer variable counting the training steps.
    finite: None, or a scalar bool that is False for a skipped float16
      step, which leaves the averages as they are (a decay of 1).
  """
  if finite is None:
    return tf.train.ExponentialMovingAverage(MOVING_AVERAGE_DECAY,
                                             global_step)
  steps = tf.cast(global_step, tf.float32)
  decay = tf.minimum(MOVING_AVERAGE_DECAY, (1.0 + steps) / (10.0 + steps))
  return tf.train.ExponentialMovingAverage(tf.where(finite, decay, 1.0))


def variables_to_restore():
  """Maps the moving-average names in a checkpoint to the model variables,
  for evaluation and prediction with the averaged weights."""
  return tf.train.ExponentialMovingAverage(
      MOVING_AVERAGE_DECAY).variables_to_restore()


def predict(images, dtype=None):
  """Class probabilities for images of any size, as served to users.

  The one graph that cifar10_predict.py and cifar10_export.py both build, so
  a prediction from a file and one from the exported model agree. Images
  that are not 32x32 are first resized to 32x32 (area interpolation: each
  output pixel averages its footprint, so shrinking does not alias and a
  whole-number downscale of an upscaled CIFAR image gives it back exactly;
  the aspect ratio is not kept). 32x32 images reach the evaluation
  preprocessing untouched, so their predictions are exactly those of
  cifar10_eval.py.

  Args:
    images: uint8 (or float, 0-255) [batch, height, width, 3]; any batch
      size, and height and width may be unknown until run time.
    dtype: compute dtype of the model; None for `compute_dtype()`.

  Returns:
    float32 probabilities [batch, NUM_CLASSES], each row summing to 1
    ([0, NUM_CLASSES] for an empty batch).
  """
  size = cifar10_input.ORIGINAL_IMAGE_SIZE
  images = tf.convert_to_tensor(images)
  pixels = tf.cast(images, tf.float32)

  def resized():
    return tf.compat.v2.image.resize(pixels, [size, size], method='area')

  static_size = images.shape[1:3].as_list()
  if static_size == [size, size]:
    pass  # Already CIFAR-sized: no resize op in the graph at all.
  elif None in static_size:
    # Known only at run time (a decoded file): resize only if needed.
    is_cifar_size = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
    pixels = tf.cond(is_cifar_size, lambda: pixels, resized)
    # Both branches are 32x32; `inference` needs that statically to size
    # its fully connected layer.
    pixels.set_shape([None, size, size, 3])
  else:
    pixels = resized()
  # oneDNN's convolution (TensorFlow 2.21) returns an empty batch with its
  # input's depth, which conv2 then rejects: an empty batch gets one blank
  # image, whose row is dropped. A batch of one or more gets nothing added.
  count = tf.shape(pixels)[0]
  blank = tf.zeros(tf.stack([tf.maximum(1 - count, 0), size, size, 3]))
  logits = inference(cifar10_input.preprocess_for_eval(
      tf.concat([pixels, blank], 0)), dtype)[:count]
  return tf.nn.softmax(logits, name='probabilities')
