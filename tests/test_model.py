"""The model library: layers, initializers, loss, schedule, moving averages,
checkpoints, towers and learning."""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import cifar10
import cifar10_train

tf.disable_eager_execution()

# The variables of the tutorial's training graph, with their shapes: its
# checkpoints restore here and ours restore there.
MODEL_SHAPES = {
    'conv1/weights': [5, 5, 3, 64], 'conv1/biases': [64],
    'conv2/weights': [5, 5, 64, 64], 'conv2/biases': [64],
    'local3/weights': [2304, 384], 'local3/biases': [384],
    'local4/weights': [384, 192], 'local4/biases': [192],
    'softmax_linear/weights': [192, 10], 'softmax_linear/biases': [10],
}
LOSS_AVERAGES = ['cross_entropy/avg', 'local3/weight_loss/avg',
                 'local4/weight_loss/avg', 'total_loss/avg']


def _placeholders():
  images = tf.placeholder(tf.float32, [None, 24, 24, 3])
  labels = tf.placeholder(tf.int32, [None])
  return images, labels


def test_constants():
  assert cifar10.MOVING_AVERAGE_DECAY == 0.9999
  assert cifar10.NUM_EPOCHS_PER_DECAY == 350.0
  assert cifar10.LEARNING_RATE_DECAY_FACTOR == 0.1
  assert cifar10.INITIAL_LEARNING_RATE == 0.1
  assert cifar10.LOSS_AVERAGE_DECAY == 0.9
  # Dynamic loss scaling (float16 on GPUs) starts and grows as TensorFlow's
  # own does.
  assert cifar10.INITIAL_LOSS_SCALE == 2.0 ** 15
  assert cifar10.LOSS_SCALE_GROWTH_STEPS == 2000
  assert cifar10.TOWER_NAME == 'tower'
  assert cifar10.DATA_URL == (
      'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz')


def test_parameter_count_and_names(graph):
  images, _ = _placeholders()
  cifar10.inference(images)
  variables = {v.op.name: v.shape.as_list() for v in tf.trainable_variables()}
  assert variables == MODEL_SHAPES
  assert sum(np.prod(s) for s in variables.values()) == 1068298
  assert all(v.dtype.base_dtype == tf.float32 for v in tf.global_variables())
  assert all('CPU' in v.device.upper() for v in tf.global_variables())


@pytest.mark.parametrize('batch', [1, 7])
def test_layer_shapes_any_batch(graph, batch):
  images, _ = _placeholders()
  logits = cifar10.inference(images)
  names = {'conv1/conv1': [24, 24, 64], 'pool1': [12, 12, 64],
           'norm1': [12, 12, 64], 'conv2/conv2': [12, 12, 64],
           'norm2': [12, 12, 64], 'pool2': [6, 6, 64], 'local3/local3': [384],
           'local4/local4': [192], 'softmax_linear/softmax_linear': [10]}
  tensors = {n: graph.get_tensor_by_name(n + ':0') for n in names}
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    out = sess.run([logits, tensors], {images: np.random.randn(
        batch, 24, 24, 3)})
  assert out[0].shape == (batch, 10)
  for name, shape in names.items():
    assert out[1][name].shape == tuple([batch] + shape), name


def test_initializers(graph):
  images, _ = _placeholders()
  cifar10.inference(images)
  stddevs = {'conv1': 5e-2, 'conv2': 5e-2, 'local3': 0.04, 'local4': 0.04,
             'softmax_linear': 1 / 192.0}
  biases = {'conv1': 0.0, 'conv2': 0.1, 'local3': 0.1, 'local4': 0.1,
            'softmax_linear': 0.0}
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    values = {v.op.name: sess.run(v) for v in tf.trainable_variables()}
  for layer, stddev in stddevs.items():
    w = values[layer + '/weights']
    # A normal truncated at two standard deviations has std 0.88 sigma.
    assert abs(w.std() - 0.8796 * stddev) < 0.12 * stddev, layer
    assert abs(w.mean()) < 0.1 * stddev, layer
    assert np.abs(w).max() <= 2 * stddev + 1e-7, layer
    np.testing.assert_array_equal(values[layer + '/biases'],
                                  np.float32(biases[layer]))


def test_lrn_and_pooling_settings(graph):
  assert (cifar10.LRN_DEPTH_RADIUS, cifar10.LRN_BIAS, cifar10.LRN_BETA) == (
      4, 1.0, 0.75)
  assert cifar10.LRN_ALPHA == pytest.approx(0.001 / 9.0)
  images, _ = _placeholders()
  cifar10.inference(images)
  for name in ('pool1', 'pool2'):
    op = graph.get_operation_by_name(name)
    assert op.type == 'MaxPool'
    assert op.get_attr('ksize') == [1, 3, 3, 1]
    assert op.get_attr('strides') == [1, 2, 2, 1]
    assert op.get_attr('padding') == b'SAME'
  for name in ('conv1/Conv2D', 'conv2/Conv2D'):
    op = graph.get_operation_by_name(name)
    assert op.get_attr('strides') == [1, 1, 1, 1]
    assert op.get_attr('padding') == b'SAME'


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
def test_lrn_matches_tf_nn_lrn_with_gradient(graph, dtype):
  """norm1/norm2 compute tf.nn.lrn(x, 4, 1.0, 0.001 / 9, 0.75), forward and
  backward, to float32 rounding (in float32 whatever the compute dtype)."""
  rng = np.random.RandomState(0)
  x_value = (rng.rand(6, 12, 12, 64) * 20).astype(np.float32)
  dy_value = rng.randn(6, 12, 12, 64).astype(np.float32)
  x = tf.constant(x_value)
  y = cifar10._lrn(tf.cast(x, dtype), 'norm')
  assert y.dtype == dtype and y.op.name == 'norm'
  assert cifar10._lrn(tf.cast(x, dtype), 'norm', tf.float32).dtype == (
      tf.float32)
  reference = tf.nn.lrn(x, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)
  grads = tf.gradients(tf.cast(y, tf.float32), x, dy_value)[0]
  ref_grads = tf.gradients(reference, x, dy_value)[0]
  with tf.Session() as sess:
    out, ref, g, ref_g = sess.run([y, reference, grads, ref_grads])
  out = np.asarray(out, np.float32)
  # The normalization really acts: far from the identity on these inputs.
  assert np.abs(ref - x_value).max() > 1.0
  tolerance = 1e-5 if dtype == tf.float32 else 1e-2
  np.testing.assert_allclose(out, ref, rtol=tolerance, atol=tolerance)
  np.testing.assert_allclose(g, ref_g, rtol=tolerance, atol=tolerance)


def test_bias_relu_pool_equals_the_tutorials_layers_with_gradient(graph):
  """pool1 has the tutorial's values and gradients (bit for bit, the bias
  gradient to float rounding), although its gradient applies the ReLU's
  mask to the pooled values and sums the bias gradient there."""
  rng = np.random.RandomState(0)
  # Many windows entirely negative, some with repeated maxima.
  conv_value = np.round(rng.randn(4, 24, 24, 64) - 1, 1).astype(np.float32)
  dy_value = rng.randn(4, 12, 12, 64).astype(np.float32)
  conv = tf.constant(conv_value)
  biases = tf.constant(rng.randn(64).astype(np.float32) / 4)
  y = cifar10._bias_relu_pool(conv, biases, 'conv1', 'pool1')
  reference = tf.nn.max_pool(tf.nn.relu(conv + biases), [1, 3, 3, 1],
                             [1, 2, 2, 1], 'SAME')
  grads = tf.gradients(y, [conv, biases], dy_value)
  ref_grads = tf.gradients(reference, [conv, biases], dy_value)
  with tf.Session() as sess:
    out, ref, g, ref_g = sess.run([y, reference, grads, ref_grads])
  assert (ref == 0).mean() > 0.01 and (ref_g[0] != 0).mean() > 0.05
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(g[0], ref_g[0])
  np.testing.assert_allclose(g[1], ref_g[1], rtol=1e-5, atol=1e-4)
  assert np.abs(ref_g[1]).min() > 0.1
  assert graph.get_operation_by_name('conv1/conv1').type == 'Relu'


def _tutorial_loss(images, labels, w):
  """The tutorial's model and loss from plain tf.nn ops, on the weights
  `w` (name -> variable)."""
  def lrn(x):
    return tf.nn.lrn(x, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)

  def pool(x):
    return tf.nn.max_pool(x, [1, 3, 3, 1], [1, 2, 2, 1], 'SAME')

  def conv(x, layer):
    return tf.nn.relu(tf.nn.bias_add(
        tf.nn.conv2d(x, w[layer + '/weights'], [1, 1, 1, 1], 'SAME'),
        w[layer + '/biases']))

  def dense(x, layer):
    return tf.matmul(x, w[layer + '/weights']) + w[layer + '/biases']

  norm1 = lrn(pool(conv(images, 'conv1')))
  pool2 = pool(lrn(conv(norm1, 'conv2')))
  local3 = tf.nn.relu(dense(tf.reshape(pool2, [tf.shape(images)[0], -1]),
                            'local3'))
  logits = dense(tf.nn.relu(dense(local3, 'local4')), 'softmax_linear')
  cross_entropy = tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                     logits=logits))
  decay = 0.004 * (tf.nn.l2_loss(w['local3/weights']) +
                   tf.nn.l2_loss(w['local4/weights']))
  return logits, cross_entropy + decay


@pytest.mark.parametrize('batch', [5, 16])
def test_model_and_loss_equal_the_tutorials_plain_ops(graph, batch):
  """inference and loss, with their faster forms of LRN, conv1's gradient
  and the rest, have the values and gradients of the tutorial's model
  written with plain tf.nn ops, for every variable."""
  # Fixed weights too: the two forms round differently, and in about one
  # draw of 16 unseeded ones at batch 16 two values of a pooling window came
  # within rounding of each other and each form took another as the
  # maximum, which moved a gradient (conv1/weights' by 2e-3).
  tf.set_random_seed(batch)
  rng = np.random.RandomState(batch)
  images_value = rng.randn(batch, 24, 24, 3).astype(np.float32)
  images_value[0] = 0  # Every ReLU at its bias alone.
  images, labels = _placeholders()
  logits = cifar10.inference(images)
  total = cifar10.loss(logits, labels)
  w = {v.op.name: v for v in tf.trainable_variables()}
  ref_logits, ref_total = _tutorial_loss(images, labels, w)
  variables = sorted(w.values(), key=lambda v: v.op.name)
  grads = tf.gradients(total, variables)
  ref_grads = tf.gradients(ref_total, variables)
  feed = {images: images_value, labels: rng.randint(0, 10, batch)}
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    # Biases of both signs and larger weights: some ReLUs and pooling
    # windows on, some off, and logits far from zero.
    for v in variables:
      scale = 0.3 if v.op.name.endswith('biases') else 2.0
      value = sess.run(v)
      v.load(value * scale + (scale * rng.randn(*value.shape)
                              if scale < 1 else 0), sess)
    out, ref, g, ref_g, t, ref_t = sess.run(
        [logits, ref_logits, grads, ref_grads, total, ref_total], feed)
  assert np.abs(ref).max() > 1
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  assert t == pytest.approx(ref_t, rel=1e-5)
  for v, got, expected in zip(variables, g, ref_g):
    assert np.abs(expected).max() > 0, v.op.name
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error < 1e-4, v.op.name


def test_loss_on_zero_logits_is_ln10_plus_weight_decay(graph):
  images, labels = _placeholders()
  total = cifar10.loss(cifar10.inference(images), labels)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for v in tf.trainable_variables():
      if v.op.name.startswith('softmax_linear'):
        sess.run(v.assign(tf.zeros_like(v)))
    value = sess.run(total, {images: np.random.randn(5, 24, 24, 3),
                             labels: [0, 3, 9, 2, 2]})
    weights = {v.op.name: v for v in tf.trainable_variables()}
    w3, w4 = sess.run([weights['local3/weights'], weights['local4/weights']])
  decay = 0.004 * (np.sum(w3.astype(np.float64) ** 2) / 2 +
                   np.sum(w4.astype(np.float64) ** 2) / 2)
  assert value == pytest.approx(math.log(10) + decay, rel=1e-5)
  assert decay > 0.1  # the decay term is really there


def test_labels_accept_int32_and_int64(graph):
  images, _ = _placeholders()
  logits = cifar10.inference(images)
  for dtype in (tf.int32, tf.int64):
    cifar10.loss(logits, tf.constant([0, 3, 9], dtype))
  # Each call adds its cross entropy to the 'losses' collection.
  cross_entropies = [t for t in tf.get_collection('losses')
                     if t.op.name.startswith('cross_entropy')]
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    values = sess.run(cross_entropies, {
        images: np.random.RandomState(0).randn(3, 24, 24, 3)})
  assert len(values) == 2 and values[0] > 0
  assert values[0] == pytest.approx(values[1])


@pytest.mark.parametrize('examples_per_step,decay_steps',
                         [(128, 136718), (256, 68359), (100, 175000),
                          # Where a float32 division decays a step late
                          # (182291 / 182291 < 1 as a product with the
                          # reciprocal) or early (past 2**24).
                          (96, 182291), (1, 17500000)])
def test_learning_rate_schedule(graph, examples_per_step, decay_steps):
  step = tf.placeholder(tf.int64, [])
  lr = cifar10.learning_rate(step, examples_per_step)
  with tf.Session() as sess:
    at = lambda s: sess.run(lr, {step: s})
    assert at(0) == pytest.approx(0.1)
    assert at(decay_steps - 1) == pytest.approx(0.1)
    assert at(decay_steps) == pytest.approx(0.01)
    assert at(2 * decay_steps) == pytest.approx(0.001)


def _train_graph(images, labels, devices=('/cpu:0',)):
  return cifar10_train.build_towers(images, labels, list(devices))


def test_moving_averages_exist_and_move(graph):
  rng = np.random.RandomState(0)
  images = tf.constant(rng.randn(8, 24, 24, 3).astype(np.float32))
  labels = tf.constant(rng.randint(0, 10, 8).astype(np.int32))
  g = _train_graph(images, labels)
  names = {v.op.name: v for v in tf.global_variables()}
  expected = set(MODEL_SHAPES) | {n + '/ExponentialMovingAverage'
                                  for n in MODEL_SHAPES}
  expected |= set(LOSS_AVERAGES) | {'global_step'}
  assert set(names) == expected
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    before = sess.run(names)
    for _ in range(3):
      sess.run(g.train_op)
    after = sess.run(names)
  assert after['global_step'] == 3
  for name in MODEL_SHAPES:
    average = name + '/ExponentialMovingAverage'
    np.testing.assert_array_equal(before[average], before[name])
    assert not np.allclose(after[average], before[average]), average
    # With num_updates=step the first decays are small: the average follows.
    assert not np.allclose(after[average], after[name]), average
  for name in LOSS_AVERAGES:
    assert before[name] == 0 and after[name] > 0, name


def test_training_state_stays_on_the_cpu_with_towers_on_gpus(graph):
  """Every variable (weights, their averages, the loss averages and the
  global step) is placed on the CPU, not left for the placer to put on a
  GPU, where a parameter server would take the GPU's memory."""
  images = tf.zeros([4, 24, 24, 3])
  _train_graph(images, tf.zeros([4], tf.int32), ('/gpu:0', '/gpu:1'))
  assert {v.op.name for v in tf.global_variables()} >= (
      set(LOSS_AVERAGES) | {'global_step'})
  for v in tf.global_variables():
    assert 'CPU' in v.device.upper(), (v.op.name, v.device)


def test_trainer_takes_gpu_memory_as_needed(flags):
  """So that cifar10_eval.py fits next to it on the same GPU."""
  flags.log_device_placement = False
  for devices in (['/cpu:0'], ['/gpu:0', '/gpu:1']):
    config = cifar10_train.tower_session_config(devices)
    assert config.gpu_options.allow_growth, devices


def test_one_session_config_for_every_script():
  """Soft placement and GPU memory as needed, with the caller's options."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  config = cifar10_cli.session_config(inter_op_parallelism_threads=1)
  assert config.allow_soft_placement and config.gpu_options.allow_growth
  assert config.inter_op_parallelism_threads == 1


@pytest.mark.parametrize('dtype', ['float32', 'float16'])
@pytest.mark.parametrize('start', [0, 10 ** 6])
def test_weight_averages_decay_as_the_tutorials(graph, flags, monkeypatch,
                                                dtype, start):
  """The step from global step `start` moves each average (1 - decay) of
  the way to its weight, with the decay of ExponentialMovingAverage's
  num_updates: min(0.9999, (1 + t) / (10 + t)) for the step t it ends at,
  2/11 for the first step, 0.9999 far into training (float16: the path
  with loss scaling, forced on the CPU)."""
  if dtype == 'float16':
    flags.use_fp16 = True
    monkeypatch.setattr(cifar10, 'compute_dtype',
                        lambda on_gpu=None: tf.float16)
  rng = np.random.RandomState(0)
  images = tf.constant(rng.randn(8, 24, 24, 3).astype(np.float32))
  labels = tf.constant(rng.randint(0, 10, 8).astype(np.int32))
  g = _train_graph(images, labels)
  names = {v.op.name: v for v in tf.global_variables()}
  with tf.Session() as sess:
    sess.run([tf.global_variables_initializer(),
              tf.local_variables_initializer()])
    names['global_step'].load(start, sess)
    # Averages apart from the weights, so that the step shows.
    for name in MODEL_SHAPES:
      average = names[name + '/ExponentialMovingAverage']
      average.load(sess.run(average) + 1.0, sess)
    before = sess.run(names)
    sess.run(g.train_op)
    after = sess.run(names)
  assert after['global_step'] == start + 1
  decay = min(0.9999, (2.0 + start) / (11.0 + start))
  for name in MODEL_SHAPES:
    average = name + '/ExponentialMovingAverage'
    np.testing.assert_allclose(
        after[average], decay * before[average] + (1 - decay) * after[name],
        atol=2e-6, err_msg=average)


def test_predict_resizes_images_of_a_static_shape(graph):
  """Shapes known when the graph is built take the static path: 32x64 (a
  width-doubled 32x32 image) is resized back to the 32x32 one, whose
  probabilities it then gets."""
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (1, 32, 32, 3)).astype(np.uint8)
  with tf.variable_scope('', reuse=tf.AUTO_REUSE):
    plain = cifar10.predict(tf.constant(image), tf.float32)
    wide = cifar10.predict(tf.constant(image.repeat(2, axis=2)), tf.float32)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    plain, wide = sess.run([plain, wide])
  np.testing.assert_allclose(wide, plain, atol=1e-6)


def test_predict_shrinks_by_area(graph):
  """A threefold upscale whose block centres stand out is shrunk to each
  block's mean (area), not to its centre (bilinear) nor its corner
  (nearest), on the path of decoded files, whose size is known at run time
  only. (The centres vary: a constant offset is what standardization takes
  away.)"""
  rng = np.random.RandomState(2)
  base = rng.randint(0, 128, (1, 32, 32, 3)).astype(np.uint8)
  step = rng.randint(0, 8, (1, 32, 32, 3)).astype(np.uint8)
  blocks = base.repeat(3, axis=1).repeat(3, axis=2)
  blocks[:, 1::3, 1::3] += 9 * step  # Block means: base + step.
  images = tf.placeholder(tf.uint8, [None, None, None, 3])
  probabilities = cifar10.predict(images, tf.float32)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    shrunk, mean, centre, corner = [
        sess.run(probabilities, {images: x})
        for x in (blocks, base + step, base + 9 * step, base)]
  np.testing.assert_allclose(shrunk, mean, atol=1e-5)
  # Differences of 1e-3 at initial weights: far above that tolerance.
  assert np.abs(shrunk - centre).max() > 1e-4
  assert np.abs(shrunk - corner).max() > 1e-4


def test_predict_any_batch_size_even_empty(graph):
  """An empty batch gives no rows (oneDNN's convolution alone fails on
  it), and an image's probabilities do not depend on its batch."""
  rng = np.random.RandomState(1)
  images = tf.placeholder(tf.uint8, [None, 32, 32, 3])
  probabilities = cifar10.predict(images, tf.float32)
  batch = rng.randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    empty = sess.run(probabilities, {images: batch[:0]})
    one, three = [sess.run(probabilities, {images: batch[:n]}) for n in (1, 3)]
  assert empty.shape == (0, 10)
  assert one.shape == (1, 10) and three.shape == (3, 10)
  np.testing.assert_allclose(three[:1], one, atol=1e-6)
  np.testing.assert_allclose(three.sum(axis=1), 1.0, atol=1e-6)


def test_summaries_have_legal_unique_tags(graph):
  images = tf.zeros([4, 24, 24, 3])
  labels = tf.zeros([4], tf.int32)
  _train_graph(images, labels, devices=['/cpu:0', '/cpu:0'])
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    summary = tf.Summary()
    summary.ParseFromString(sess.run(tf.summary.merge_all()))
  tags = [v.tag for v in summary.value]
  assert len(tags) == len(set(tags))
  for tag in ['learning_rate', 'total_loss', 'total_loss_raw',
              'cross_entropy', 'cross_entropy_raw', 'local3/weight_loss',
              'conv1/activations', 'conv1/sparsity', 'softmax_linear/sparsity',
              'conv2/weights', 'conv2/weights/gradients']:
    assert tag in tags, tag
  assert not [t for t in tags if 'tower' in t or ' ' in t]


def test_checkpoint_restores_by_name_into_fresh_graph(tmp_path):
  rng = np.random.RandomState(0)
  batch = rng.randn(6, 24, 24, 3).astype(np.float32)
  with tf.Graph().as_default():
    g = _train_graph(tf.constant(batch), tf.constant(np.arange(6) % 10))
    saver = tf.train.Saver()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(g.train_op)
      path = saver.save(sess, str(tmp_path / 'model.ckpt'), global_step=1)
      variables = {v.op.name: v for v in tf.global_variables()}
      averages = {name: sess.run(variables[name + '/ExponentialMovingAverage'])
                  for name in MODEL_SHAPES}
  saved = dict(tf.train.list_variables(path))
  for name, shape in MODEL_SHAPES.items():
    assert saved[name] == shape
    assert saved[name + '/ExponentialMovingAverage'] == shape
  with tf.Graph().as_default():
    images = tf.placeholder(tf.float32, [None, 24, 24, 3])
    logits = cifar10.inference(images)
    with tf.Session() as sess:
      tf.train.Saver(cifar10.variables_to_restore()).restore(sess, path)
      for v in tf.trainable_variables():
        np.testing.assert_array_equal(sess.run(v), averages[v.op.name])
      assert sess.run(logits, {images: batch}).shape == (6, 10)


def test_two_towers_step_equals_one_tower_double_batch():
  """One step with two towers of batch B changes the variables exactly as
  one tower with batch 2B on the same images does."""
  rng = np.random.RandomState(3)
  images = rng.randn(16, 24, 24, 3).astype(np.float32)
  labels = rng.randint(0, 10, 16).astype(np.int32)
  init = None
  results = []
  for devices in (['/cpu:0'], ['/cpu:0', '/cpu:0']):
    with tf.Graph().as_default():
      g = _train_graph(tf.constant(images), tf.constant(labels), devices)
      assert g.examples_per_step == 16
      variables = tf.trainable_variables()
      with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        if init is None:
          init = sess.run(variables)
        for v, value in zip(variables, init):
          v.load(value, sess)
        loss_value, _ = sess.run([g.loss, g.train_op])
        results.append((loss_value, sess.run(variables)))
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
  for one, two, start in zip(results[0][1], results[1][1], init):
    assert not np.allclose(one, start)
    np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-6)


def test_one_graph_optimization_pass_trains_the_same(flags):
  """On CPUs the trainer's session runs one Grappler pass, not two: the
  same losses and weights, step for step (on fixed batches from the same
  start: the input pipeline's order is not fixed by a seed)."""
  flags.log_device_placement = False
  config = cifar10_train.tower_session_config(['/cpu:0'])
  rewrites = config.graph_options.rewrite_options
  assert rewrites.meta_optimizer_iterations == rewrites.ONE
  assert not cifar10_train.tower_session_config(
      ['/gpu:0']).graph_options.rewrite_options.meta_optimizer_iterations
  rng = np.random.RandomState(5)
  images = rng.randn(4, 16, 24, 24, 3).astype(np.float32)
  labels = rng.randint(0, 10, (4, 16)).astype(np.int32)
  init, results = None, []
  for session_config in (tf.ConfigProto(), config):
    with tf.Graph().as_default():
      images_in = tf.placeholder(tf.float32, [16, 24, 24, 3])
      labels_in = tf.placeholder(tf.int32, [16])
      g = _train_graph(images_in, labels_in)
      variables = tf.trainable_variables()
      with tf.Session(config=session_config) as sess:
        sess.run(tf.global_variables_initializer())
        init = init or sess.run(variables)
        for v, value in zip(variables, init):
          v.load(value, sess)
        losses = [sess.run([g.loss, g.train_op], {images_in: x,
                                                  labels_in: y})[0]
                  for x, y in zip(images, labels)]
        results.append((losses, sess.run(variables)))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
  for two_passes, one_pass in zip(results[0][1], results[1][1]):
    np.testing.assert_allclose(one_pass, two_passes, rtol=1e-5, atol=1e-7)


def _learn(data_dir, steps=120, batch=32):
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    g = cifar10_train.build_training_graph(['/cpu:0'], data_dir, batch)
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(),
                tf.local_variables_initializer()])
      losses = [sess.run([g.loss, g.train_op])[0] for _ in range(steps)]
  assert all(np.isfinite(losses))
  # Batches this small make single losses noisy: compare averages. And the
  # input's order varies from run to run: after 60 steps at batch 32 the
  # loss had fallen by 0.4 to 2.1 in 12 runs, after 120 by 1.8 to 2.3.
  return np.mean(losses[:5]), np.mean(losses[-10:])


def test_summaries_read_the_averages_after_the_update(data_dir):
  """Each step's '<loss>' summary is that step's moving average, 0.9 x the
  previous one + 0.1 x '<loss>_raw', for every loss; and the weight
  histograms show the weights after the step, like their averages."""
  with tf.Graph().as_default():
    g = cifar10_train.build_training_graph(['/cpu:0'], data_dir[1], 8)
    summaries = tf.summary.merge_all()
    weights = tf.trainable_variables()[0]
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(),
                tf.local_variables_initializer()])
      previous = {}
      for _ in range(3):
        serialized, _ = sess.run([summaries, g.train_op])
        summary = tf.Summary.FromString(serialized)
        values = {v.tag: v.simple_value for v in summary.value
                  if v.HasField('simple_value')}
        losses = [t[:-len('_raw')] for t in values if t.endswith('_raw')]
        assert 'cross_entropy' in losses and len(losses) == 4, values
        for loss in losses:
          expected = (cifar10.LOSS_AVERAGE_DECAY * previous.get(loss, 0.0) +
                      (1 - cifar10.LOSS_AVERAGE_DECAY) * values[loss + '_raw'])
          assert values[loss] == pytest.approx(expected, rel=1e-5), loss
          previous[loss] = values[loss]
        histogram, = [v.histo for v in summary.value
                      if v.tag == weights.op.name]
        after = sess.run(weights)
        assert (histogram.min, histogram.max) == (after.min(), after.max())


def test_short_run_learns(data_dir):
  first, last = _learn(data_dir[1])
  assert last < first - 0.5, (first, last)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_mixed_precision_learns(data_dir, flags, monkeypatch, dtype):
  """--use_fp16: bfloat16 (CPU) or float16 with loss scaling (GPU; forced
  here on the CPU) trains to a finite, falling loss; weights stay float32."""
  flags.use_fp16 = True
  monkeypatch.setattr(cifar10, 'compute_dtype',
                      lambda on_gpu=None: tf.as_dtype(dtype))
  # CPUs run float16 in slow generic kernels (about 0.1 s an image for a
  # step here), hence fewer and smaller steps. (At batch 8 the loss fell by
  # only 0.1 in one run of the suite.)
  first, last = _learn(data_dir[1], steps=40 if dtype == 'float16' else 120,
                       batch=16 if dtype == 'float16' else 32)
  assert last < first - 0.3, (first, last)


def test_float16_loss_scale_skips_overflow_and_grows(graph, flags,
                                                     monkeypatch):
  """An overflowing float16 step changes no weights and halves the scale;
  LOSS_SCALE_GROWTH_STEPS finite steps in a row double it. The scale is a
  local variable, so checkpoints do not hold it."""
  flags.use_fp16 = True
  monkeypatch.setattr(cifar10, 'compute_dtype',
                      lambda on_gpu=None: tf.float16)
  monkeypatch.setattr(cifar10, 'LOSS_SCALE_GROWTH_STEPS', 3)
  weights = tf.Variable([1.0, 2.0])
  grad = tf.placeholder(tf.float32, [2])
  safe, update, finite, stuck = cifar10._apply_loss_scale([(grad, weights)])
  with tf.control_dependencies([update]):
    step = weights.assign_sub(safe[0][0])
  scale, _ = cifar10._loss_scale()
  assert scale in tf.local_variables()
  assert scale not in tf.global_variables()
  with tf.Session() as sess:
    sess.run([tf.global_variables_initializer(),
              tf.local_variables_initializer()])
    sess.run(step, {grad: [np.inf, 1.0]})
    np.testing.assert_array_equal(sess.run(weights), [1.0, 2.0])
    assert sess.run(scale) == cifar10.INITIAL_LOSS_SCALE / 2
    sess.run(step, {grad: [np.nan, 1.0]})
    assert sess.run(scale) == cifar10.INITIAL_LOSS_SCALE / 4
    for _ in range(3):
      sess.run(step, {grad: [0.5, 0.5]})
    np.testing.assert_allclose(sess.run(weights), [-0.5, 0.5])
    assert sess.run(scale) == cifar10.INITIAL_LOSS_SCALE / 2
    # The count starts again after each doubling.
    for expected in (2, 2, 1):
      sess.run(step, {grad: [0.0, 0.0]})
      assert sess.run(scale) == cifar10.INITIAL_LOSS_SCALE / expected
    # Never to infinity: it would stay there.
    scale.load(2.0 ** 127, sess)
    for _ in range(3):
      sess.run(step, {grad: [0.0, 0.0]})
    assert sess.run(scale) == 2.0 ** 127
    # Never below 1.
    scale.load(1.0, sess)
    sess.run(step, {grad: [np.inf, 1.0]})
    assert sess.run(scale) == 1.0
    # Overflow at a scale of 1 already: halving cannot help.
    for value, overflow, expected in [(2.0, True, (False, False)),
                                      (1.0, False, (True, False)),
                                      (1.0, True, (False, True))]:
      scale.load(value, sess)
      got = sess.run([finite, stuck],
                     {grad: [np.inf if overflow else 1.0, 1.0]})
      assert tuple(got) == expected, (value, overflow)


def test_float16_overflow_skips_the_whole_step(data_dir, flags, monkeypatch):
  """The train op of an overflowing float16 step changes no weight, moving
  average or global step; only the loss scale is halved."""
  flags.use_fp16 = True
  monkeypatch.setattr(cifar10, 'compute_dtype',
                      lambda on_gpu=None: tf.float16)
  with tf.Graph().as_default():
    g = cifar10_train.build_training_graph(['/cpu:0'], data_dir[1], 8)
    scale, _ = cifar10._loss_scale()
    with tf.Session() as sess:
      sess.run([tf.global_variables_initializer(),
                tf.local_variables_initializer()])
      sess.run(g.train_op)
      assert sess.run(g.global_step) == 1
      before = sess.run(tf.global_variables())
      scale.load(1e30, sess)  # Any gradient times this overflows.
      sess.run(g.train_op)
      for variable, old, new in zip(tf.global_variables(), before,
                                    sess.run(tf.global_variables())):
        if '/avg' not in variable.op.name:  # Loss averages see the loss.
          np.testing.assert_array_equal(old, new, variable.op.name)
      assert sess.run(scale) == np.float32(5e29)
      scale.load(cifar10.INITIAL_LOSS_SCALE, sess)
      sess.run(g.train_op)
      assert sess.run(g.global_step) == 2


def test_float16_gradients_are_scaled_and_unscaled(graph, flags,
                                                   monkeypatch):
  """compute_gradients scales the loss up, so that small float16 gradients
  do not flush to zero, and the gradients back down."""
  flags.use_fp16 = True
  rng = np.random.RandomState(0)
  images = tf.constant(rng.randn(4, 24, 24, 3).astype(np.float32))
  labels = tf.constant([1, 2, 3, 4])
  total = cifar10.loss(cifar10.inference(images, dtype=tf.float16), labels)
  scaled = cifar10.compute_gradients(total, dtype=tf.float16)
  plain = cifar10.compute_gradients(total, dtype=tf.float32)
  # A millionth of the loss: its float16 gradients underflow unless scaled.
  tiny = cifar10.compute_gradients(total * 1e-6, dtype=tf.float16)
  with tf.Session() as sess:
    sess.run([tf.global_variables_initializer(),
              tf.local_variables_initializer()])
    expected = sess.run(plain)
    for (g1, _), (g2, _) in zip(sess.run(scaled), expected):
      np.testing.assert_allclose(g1, g2, rtol=2e-2, atol=1e-4)
    (conv1, _), (g2, _) = sess.run(tiny[0]), expected[0]
    assert np.abs(conv1).max() > 0
    np.testing.assert_allclose(conv1 * 1e6, g2, rtol=0.1, atol=1e-3)
    # Unscaled by the scale of the moment, as it changes.
    cifar10._loss_scale()[0].load(2.0 ** 10, sess)
    for (g1, _), (g2, _) in zip(sess.run(scaled), expected):
      np.testing.assert_allclose(g1, g2, rtol=2e-2, atol=1e-4)


def test_loss_scale_stays_off_the_parameter_servers(graph):
  """On a cluster each worker keeps its own float16 loss scale."""
  setter = tf.train.replica_device_setter(
      ps_tasks=1, worker_device='/job:worker/task:1')
  with tf.device(setter):
    weights = tf.get_variable('weights', [2])
    scale, good_steps = cifar10._loss_scale()
  assert weights.device.startswith('/job:ps')
  assert 'ps' not in scale.device and 'ps' not in good_steps.device



def test_bfloat16_output_layer_gradients_are_float32_ones(graph):
  """--use_fp16 on CPUs: softmax_linear's gradients, which depend only on
  the logits' rounding, are float32's to within 2% at the default batch
  size. (Its bias gradient summed in bfloat16, as BiasAddGrad does, was 6%
  off; the layers below differ by 5-15% at initialization, through the
  rounding of every activation.)"""
  rng = np.random.RandomState(0)
  images = tf.constant(rng.randn(128, 24, 24, 3).astype(np.float32))
  labels = tf.constant(rng.randint(0, 10, 128).astype(np.int32))
  grads = {}
  for dtype in (tf.float32, tf.bfloat16):
    with tf.variable_scope(tf.get_variable_scope(),
                           reuse=dtype == tf.bfloat16):
      logits = cifar10.inference(images, dtype=dtype)
    cross_entropy = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                       logits=logits))
    variables = [v for v in tf.trainable_variables()
                 if v.op.name.startswith('softmax_linear/')]
    grads[dtype] = tf.gradients(cross_entropy, variables)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    values = sess.run(grads)
  assert len(variables) == 2
  for got, expected in zip(values[tf.bfloat16], values[tf.float32]):
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error < 0.02
