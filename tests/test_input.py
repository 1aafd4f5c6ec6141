"""The CIFAR-10 reader and input pipelines."""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import cifar10_cli
import cifar10_input
import cifar_testdata

tf.disable_eager_execution()


def _run_until_end(sess, tensors):
  out = []
  try:
    while True:
      out.append(sess.run(tensors))
  except tf.errors.OutOfRangeError:
    return out


def test_constants():
  assert cifar10_input.IMAGE_SIZE == 24
  assert cifar10_input.NUM_CLASSES == 10
  assert cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN == 50000
  assert cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_EVAL == 10000


def test_read_cifar10_byte_level(tmp_path, graph):
  """Hand-made records: label byte, then R, G, B planes of 1024 bytes."""
  records = []
  expected = []
  for i, label in enumerate([3, 9, 0]):
    red = np.full(1024, 10 + i, np.uint8)
    green = np.arange(1024, dtype=np.uint32).astype(np.uint8)  # row-major
    blue = np.full(1024, 200 - i, np.uint8)
    records.append(bytes([label]) + red.tobytes() + green.tobytes() +
                   blue.tobytes())
    image = np.stack([red, green, blue], axis=-1).reshape(32, 32, 3)
    expected.append((label, image))
  path = str(tmp_path / 'hand.bin')
  with open(path, 'wb') as f:
    f.write(b''.join(records))

  queue = tf.train.string_input_producer([path], num_epochs=1, shuffle=False)
  record = cifar10_input.read_cifar10(queue)
  assert (record.height, record.width, record.depth) == (32, 32, 3)
  assert record.label.dtype == tf.int32
  assert record.label.shape.as_list() == [1]
  assert record.uint8image.dtype == tf.uint8
  assert record.uint8image.shape.as_list() == [32, 32, 3]
  with tf.Session() as sess:
    sess.run(tf.local_variables_initializer())
    coord = tf.train.Coordinator()
    threads = tf.train.start_queue_runners(sess, coord)
    for index, (label, image) in enumerate(expected):
      key, got_label, got_image = sess.run(
          [record.key, record.label, record.uint8image])
      assert key.decode() == '%s:%d' % (path, index)
      assert got_label.tolist() == [label]
      np.testing.assert_array_equal(got_image, image)
    # Pixel (row 1, column 2) of the green plane is byte 32 + 2 = 34.
    assert got_image[1, 2, 1] == 34
    with pytest.raises(tf.errors.OutOfRangeError):
      sess.run(record.label)
    coord.request_stop()
    coord.join(threads)


def test_label_outside_0_to_9_is_an_error_naming_the_data(tmp_path, graph):
  # Brackets, which TensorFlow puts around each part of the message, and
  # characters it escapes in them.
  directory = tmp_path / 'run[1] "a" \\ \x01 \u00e9'
  directory.mkdir()
  images = np.zeros([4, 32, 32, 3], np.uint8)
  with open(str(directory / 'test_batch.bin'), 'wb') as f:
    f.write(cifar_testdata.encode_records([0, 9, 10, 3], images))
  _, labels = cifar10_input.inputs(True, str(directory), 2)
  with tf.Session() as sess:
    assert sess.run(labels).tolist() == [0, 9]  # 9 is a label
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
      sess.run(labels)
  message = cifar10_cli.one_line(raised.value)
  assert message == (
      'bad CIFAR-10 data in the test files of %s: label 10 is not 0-9'
      % directory)
  # What the scripts print: the file and the record.
  assert cifar10_input.locate_bad_label(message) == (
      'bad CIFAR-10 data in %s: record 2 (counting from 0) has label 10, '
      'not 0-9'
      % (directory / 'test_batch.bin'))
  # Other errors, and this one when the files no longer hold the label,
  # are left as they are.
  assert cifar10_input.locate_bad_label('disk full') == 'disk full'
  (directory / 'test_batch.bin').write_bytes(
      cifar_testdata.encode_records([0, 9, 8, 3], images))
  assert cifar10_input.locate_bad_label(message) == message


@pytest.mark.parametrize('eval_data', [True, False])
def test_inputs_central_crop_exact(data_dir, graph, eval_data):
  """Evaluation batches: every image once, in file order (the test file,
  or the five training files one after the other), cropped centrally and
  standardized, the last batch partial."""
  _, batches, written = data_dir
  names = (cifar10_input.EVAL_FILES if eval_data else
           cifar10_input.TRAIN_FILES)
  labels = np.concatenate([written[name][0] for name in names])
  images = np.concatenate([written[name][1] for name in names])
  got_images, got_labels = cifar10_input.inputs(eval_data, batches,
                                                batch_size=128)
  assert got_images.shape.as_list() == [None, 24, 24, 3]
  with tf.Session() as sess:
    batches_out = _run_until_end(sess, [got_images, got_labels])
  assert [len(b[1]) for b in batches_out] == [128, 128, len(labels) - 256]
  assert len(labels) - 256 in (44, 64)  # 300 test and 320 training images
  all_images = np.concatenate([b[0] for b in batches_out])
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches_out]),
                                labels)
  crop = images[:, 4:28, 4:28, :].astype(np.float64)
  mean = crop.mean(axis=(1, 2, 3), keepdims=True)
  std = np.maximum(crop.std(axis=(1, 2, 3), keepdims=True), 1 / np.sqrt(1728))
  np.testing.assert_allclose(all_images, (crop - mean) / std, atol=1e-4)


def test_inputs_num_examples_and_training_files(data_dir, graph):
  _, batches, _ = data_dir
  images, labels = cifar10_input.inputs(False, batches, batch_size=100,
                                        num_examples=250)
  with tf.Session() as sess:
    sizes = [len(l) for _, l in _run_until_end(sess, [images, labels])]
    # A new session starts from the first image again.
  with tf.Session() as sess:
    again = [len(l) for _, l in _run_until_end(sess, [images, labels])]
  assert sizes == again == [100, 100, 50]
  assert cifar10_input.num_records(batches, eval_data=False) == 320
  assert cifar10_input.num_records(batches, eval_data=True) == 300


def test_repeated_inputs_serve_the_same_batches_again(data_dir, graph):
  """repeat=True (the watching evaluator's input): pass after pass, the
  batches of one pass, the last one partial."""
  _, batches, _ = data_dir
  once = cifar10_input.inputs(False, batches, batch_size=100,
                              num_examples=250)
  repeated = cifar10_input.inputs(False, batches, batch_size=100,
                                  num_examples=250, repeat=True)
  with tf.Session() as sess:
    expected = _run_until_end(sess, once)
    passes = [[sess.run(repeated) for _ in expected] for _ in range(3)]
  assert [len(labels) for _, labels in expected] == [100, 100, 50]
  for batches_out in passes:
    for (images, labels), (want_images, want_labels) in zip(batches_out,
                                                             expected):
      np.testing.assert_array_equal(labels, want_labels)
      np.testing.assert_array_equal(images, want_images)


def _prefetched_batches(graph):
  """buffer_size of the one PrefetchDataset op in `graph`."""
  (op,) = [op for op in graph.get_operations()
           if op.type == 'PrefetchDataset']
  return tf.get_static_value(op.inputs[1])


@pytest.mark.parametrize('eval_data,num_examples,batch_size,expected', [
    (True, None, 128, 3),  # 300 test images
    (True, 1000, 128, 3),  # more than there are
    (False, 250, 100, 3),
    (False, 320, 32, 10),
    (False, None, 100, 4),  # 320 training images, not the 300 test ones
    (True, 300, 1000, 1),
])
def test_repeated_inputs_read_the_whole_first_pass_ahead(
    data_dir, eval_data, num_examples, batch_size, expected):
  """The pass is kept in memory anyway: its preprocessing runs ahead of the
  model through all of it. A single pass keeps the usual few batches."""
  _, batches, _ = data_dir
  for repeat, want in ((True, expected),
                       (False, cifar10_input.PREFETCH_BATCHES)):
    with tf.Graph().as_default() as graph:
      cifar10_input.inputs(eval_data, batches, batch_size=batch_size,
                           num_examples=num_examples, repeat=repeat)
    assert _prefetched_batches(graph) == want


def test_evaluation_preprocessing_is_fixed(data_dir, graph):
  _, batches, _ = data_dir
  images, _ = cifar10_input.inputs(True, batches, batch_size=64)
  with tf.Session() as sess:
    first = sess.run(images)
  with tf.Session() as sess:
    second = sess.run(images)
  np.testing.assert_array_equal(first, second)


def _find_crop_and_flip(original, distorted):
  """The crop offset and flip that turn `original` (32x32x3 uint8) into
  `distorted` up to a per-channel affine map, and that map's parameters.

  Returns:
    (offset_y, offset_x, flipped, slopes[3], intercepts[3]) of the best
    match, and its worst per-channel correlation.
  """
  best = None
  for flipped in (False, True):
    source = original[:, ::-1] if flipped else original
    for oy in range(9):
      for ox in range(9):
        # A flip of the crop equals a crop of the flip at the mirrored x.
        window = source[oy:oy + 24, ox:ox + 24].astype(np.float64)
        corr = min(np.corrcoef(window[..., c].ravel(),
                               distorted[..., c].ravel())[0, 1]
                   for c in range(3))
        if best is None or corr > best[-1]:
          fits = [np.polyfit(window[..., c].ravel(), distorted[..., c].ravel(),
                             1) for c in range(3)]
          best = (oy, ox, flipped, [f[0] for f in fits], [f[1] for f in fits],
                  window.mean(axis=(0, 1)), corr)
  return best


def test_distorted_inputs_shuffle_the_records(tmp_path, graph):
  """Training batches come in random order: record i of every file has
  label i % 10, so the files read in turn, unshuffled, would give
  0, 0, 0, 0, 0, 1, 1, ... and a shuffled batch has no such runs."""
  count = 200
  labels = np.arange(count) % 10
  images = np.zeros((count, 32, 32, 3), np.uint8)
  for name in cifar_testdata.TRAIN_FILES:
    with open(str(tmp_path / name), 'wb') as f:
      f.write(cifar_testdata.encode_records(labels, images))
  _, got_labels = cifar10_input.distorted_inputs(str(tmp_path), 100)
  with tf.Session() as sess:
    for _ in range(3):
      batch = sess.run(got_labels)
      # Each next label the same or one more: 99 of 99 pairs unshuffled,
      # about 20 shuffled.
      steps = (batch[1:] - batch[:-1]) % 10
      assert np.isin(steps, [0, 1]).sum() < 60, batch


def test_distorted_inputs_distributions(tmp_path, graph):
  """Each training image is a random 24x24 crop, randomly flipped, with a
  random contrast in [0.2, 1.8], then standardized."""
  rng = np.random.RandomState(1)
  count = 16
  labels = rng.randint(0, 10, size=count)
  images = rng.randint(0, 80, size=(count, 32, 32, 3))
  images += np.array([20, 90, 170])  # distinct channel means
  images = images.astype(np.uint8)
  batches = str(tmp_path)
  for name in cifar_testdata.TRAIN_FILES:
    with open(os.path.join(batches, name), 'wb') as f:
      f.write(cifar_testdata.encode_records(labels, images))
  got_images, got_labels = cifar10_input.distorted_inputs(batches, count)
  assert got_images.shape.as_list() == [count, 24, 24, 3]
  assert got_images.dtype == tf.float32
  assert got_labels.shape.as_list() == [count]
  with tf.Session() as sess:
    out_images, out_labels = sess.run([got_images, got_labels])
  np.testing.assert_allclose(out_images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
  np.testing.assert_allclose(out_images.std(axis=(1, 2, 3)), 1, atol=1e-3)
  # Find each image's source: the pixel noise makes the right crop of the
  # right image the only near-perfect fit.
  offsets, flips, contrasts = set(), set(), []
  for distorted, label in zip(out_images[:12], out_labels):
    matches = []
    for index in range(count):
      match = _find_crop_and_flip(images[index], distorted)
      if match[-1] > 0.9999:
        matches.append((index, match))
    assert len(matches) == 1, 'no unique source image for a training image'
    index, (oy, ox, flipped, slopes, intercepts, means, _) = matches[0]
    assert label == labels[index]
    # One slope for all channels: the same contrast factor and scale.
    np.testing.assert_allclose(slopes, slopes[0], rtol=1e-3)
    # Contrast f moves channel intercepts apart by (m_c - m_d)(1 - f) * a / f.
    ratio = (intercepts[2] - intercepts[0]) / (slopes[0] *
                                               (means[2] - means[0]))
    contrasts.append(1 / (1 + ratio))
    offsets.add((oy, ox))
    flips.add(flipped)
  assert len(offsets) > 5  # random crops
  assert flips == {False, True}  # random flips
  assert min(contrasts) >= 0.2 - 1e-3 and max(contrasts) <= 1.8 + 1e-3
  assert max(contrasts) - min(contrasts) > 0.3


def test_crop_and_standardize_is_the_tutorials_sequence(graph):
  """The fused training preprocessing equals, image by image, crop, flip,
  brightness, contrast (about each channel's mean) and standardization done
  one after the other, in float64."""
  rng = np.random.RandomState(3)
  count = 8
  planes = rng.randint(0, 256, size=(count, 3, 32, 32)).astype(np.uint8)
  planes[0] = 77  # flat: standard deviation 0
  planes[1] = 100  # one pixel off: below the floor on the deviation
  planes[1, 0, 10, 10] = 101
  planes[2] = rng.randint(100, 102, size=(3, 32, 32))  # nearly flat
  planes[3] = np.array([0, 200, 5])[:, None, None]  # flat channels, apart
  offset_height = np.array([0, 8, 3, 0, 8, 5, 1, 4], np.int32)
  offset_width = np.array([8, 0, 3, 0, 8, 2, 7, 4], np.int32)
  flip = np.array([False, True, True, False, True, False, True, False])
  brightness = rng.uniform(-63, 63, count).astype(np.float32)
  contrast = rng.uniform(0.2, 1.8, count).astype(np.float32)
  contrast[1] = 0.5
  # Images of a batch of unknown size.
  batch = tf.placeholder(tf.uint8, [None, 3, 32, 32])
  got = cifar10_input._crop_and_standardize(  # pylint: disable=protected-access
      batch, offset_height, offset_width, flip, brightness, contrast)
  assert got.shape.as_list()[1:] == [24, 24, 3]
  with tf.Session() as sess:
    got = sess.run(got, {batch: planes})
  images = planes.transpose(0, 2, 3, 1).astype(np.float64)
  for i in range(count):
    top, left = offset_height[i], offset_width[i]
    x = images[i, top:top + 24, left:left + 24]
    if flip[i]:
      x = x[:, ::-1]
    x = x + brightness[i]
    channel_mean = x.mean(axis=(0, 1))
    x = (x - channel_mean) * contrast[i] + channel_mean
    want = (x - x.mean()) / max(x.std(), 1 / np.sqrt(24 * 24 * 3))
    np.testing.assert_allclose(got[i], want, atol=2e-5, err_msg='image %d' % i)
  assert not got[0].any()


def test_distortion_parameters_span_the_tutorials_ranges(graph, monkeypatch):
  """Over 2,000 images, the sampled crops, flips, brightness deltas and
  contrast factors fill the tutorial's ranges: offsets 0-8, half flipped,
  brightness in [-63, 63), contrast in [0.2, 1.8). (The brightness cancels
  in the standardized images, so it is checked here, where it is drawn.)"""
  drawn = []
  real = cifar10_input._crop_and_standardize  # pylint: disable=protected-access

  def recording(planes, *parameters):
    drawn.extend(parameters)
    return real(planes, *parameters)

  monkeypatch.setattr(cifar10_input, '_crop_and_standardize', recording)
  count = 2000
  rng = np.random.RandomState(0)
  data = cifar_testdata.encode_records(
      rng.randint(0, 10, count),
      rng.randint(0, 256, (count, 32, 32, 3)).astype(np.uint8))
  size = cifar10_input.RECORD_BYTES
  records = tf.constant([data[i:i + size] for i in range(0, len(data), size)])
  # pylint: disable-next=protected-access
  cifar10_input._distort_batch(records, 'test')
  with tf.Session() as sess:
    top, left, flip, brightness, contrast = sess.run(drawn)
  for offsets in (top, left):
    assert set(offsets) == set(range(9))
  assert 0.45 < flip.mean() < 0.55
  # Each bound is missed by all 2,000 draws with odds below 1e-5.
  assert -63 <= brightness.min() < -62 and 62 < brightness.max() < 63
  assert 0.2 <= contrast.min() < 0.21 and 1.79 < contrast.max() < 1.8


def test_flat_gray_images_standardize_to_exactly_zero(graph):
  """Whatever the crop, flip, brightness and contrast: the deviation is 0,
  and no rounding of the per-image terms is left over."""
  rng = np.random.RandomState(0)
  count = 500
  values = rng.randint(0, 256, count).astype(np.uint8)
  planes = np.broadcast_to(values[:, None, None, None], (count, 3, 32, 32))
  got = cifar10_input._crop_and_standardize(  # pylint: disable=protected-access
      planes, rng.randint(0, 9, count).astype(np.int32),
      rng.randint(0, 9, count).astype(np.int32), rng.rand(count) < 0.5,
      rng.uniform(-63, 63, count).astype(np.float32),
      rng.uniform(0.2, 1.8, count).astype(np.float32))
  with tf.Session() as sess:
    got = sess.run(got)
  assert not got.any(), np.abs(got).max()


def test_distorted_labels_follow_images(data_dir, graph):
  """Labels stay with their images through shuffling: the pattern images
  of a class have their light in channel label % 3."""
  _, batches, _ = data_dir
  images, labels = cifar10_input.distorted_inputs(batches, 64)
  with tf.Session() as sess:
    out_images, out_labels = sess.run([images, labels])
  channel_means = out_images.mean(axis=(1, 2))
  np.testing.assert_array_equal(channel_means.argmax(axis=1), out_labels % 3)


def test_training_batches_mix_all_files(tmp_path, graph):
  """Each file holds one label only; the first batches mix all five."""
  for i, name in enumerate(cifar_testdata.TRAIN_FILES):
    labels = np.full(200, i)
    images = np.zeros((200, 32, 32, 3), np.uint8)
    with open(os.path.join(str(tmp_path), name), 'wb') as f:
      f.write(cifar_testdata.encode_records(labels, images))
  # With 64 images a batch, one missing a file by chance has odds 0.8 ** 64.
  _, labels = cifar10_input.distorted_inputs(str(tmp_path), 64)
  with tf.Session() as sess:
    for _ in range(3):
      assert set(sess.run(labels)) == {0, 1, 2, 3, 4}


def test_dataset_is_not_embedded_in_graph(data_dir, graph):
  _, batches, _ = data_dir
  cifar10_input.distorted_inputs(batches, 16)
  cifar10_input.inputs(True, batches, 16)
  assert graph.as_graph_def().ByteSize() < 200000


def test_image_summary(data_dir, graph):
  _, batches, _ = data_dir
  cifar10_input.distorted_inputs(batches, 16)
  summaries = tf.get_collection(tf.GraphKeys.SUMMARIES)
  assert [s.op.type for s in summaries] == ['ImageSummary']
  # Evaluation inputs add none: cifar10_eval.py summarizes the first batch.
  cifar10_input.inputs(True, batches, 16)
  assert tf.get_collection(tf.GraphKeys.SUMMARIES) == summaries
  with tf.Session() as sess:
    summary = tf.Summary.FromString(sess.run(summaries[0]))
  assert [v.tag for v in summary.value] == [
      'images/image/%d' % i for i in range(3)]


def test_missing_file(data_dir, tmp_path, graph):
  _, batches, _ = data_dir
  for name in cifar_testdata.TRAIN_FILES[:4]:
    os.symlink(os.path.join(batches, name), str(tmp_path / name))
  with pytest.raises(ValueError, match='missing CIFAR-10 file: .*data_batch_5'):
    cifar10_input.distorted_inputs(str(tmp_path), 16)


@pytest.mark.parametrize('size', [0, 3073 * 2 + 5])
def test_wrong_size_file(tmp_path, graph, size):
  for name in cifar_testdata.TRAIN_FILES:
    with open(str(tmp_path / name), 'wb') as f:
      f.write(b'\0' * (3073 if name != 'data_batch_3.bin' else size))
  expected = 'empty' if size == 0 else '%d bytes is not a whole' % size
  with pytest.raises(ValueError,
                     match=r'^bad CIFAR-10 file \S*data_batch_3\.bin: %s'
                     % expected):
    cifar10_input.distorted_inputs(str(tmp_path), 16)


def test_data_file_that_is_a_directory(data_dir, tmp_path, graph):
  for name in os.listdir(data_dir[1]):
    os.symlink(os.path.join(data_dir[1], name), str(tmp_path / name))
  os.remove(str(tmp_path / 'test_batch.bin'))
  (tmp_path / 'test_batch.bin').mkdir()
  with pytest.raises(ValueError, match='^bad CIFAR-10 file %s: a directory$'
                     % (tmp_path / 'test_batch.bin')):
    cifar10_input.inputs(True, str(tmp_path), 16)


def test_empty_data_dir(tmp_path, graph):
  with pytest.raises(ValueError, match='no CIFAR-10 data in %s.*download'
                     % tmp_path):
    cifar10_input.inputs(True, str(tmp_path), 16)
  # The advice names the directory to unpack the tarball in: the parent,
  # since the tarball holds cifar-10-batches-bin/ itself.
  batches = tmp_path / 'data' / 'cifar-10-batches-bin'
  with pytest.raises(ValueError) as raised:
    cifar10_input.inputs(True, str(batches), 16)
  assert str(raised.value).endswith(
      'in %s (it unpacks to cifar-10-batches-bin/)' % (tmp_path / 'data'))


def test_class_names(data_dir, tmp_path):
  _, batches, _ = data_dir
  assert cifar10_input.class_names(batches) == cifar_testdata.CLASS_NAMES
  assert cifar10_input.class_names(str(tmp_path)) == cifar10_input.CLASS_NAMES
  (tmp_path / 'batches.meta.txt').write_bytes(b'\xa9\xff' * 40)
  with pytest.raises(ValueError) as raised:
    cifar10_input.class_names(str(tmp_path))
  assert str(raised.value).startswith(
      'bad CIFAR-10 class names file %s: not text' % (
          tmp_path / 'batches.meta.txt'))
