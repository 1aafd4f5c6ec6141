"""Reads the CIFAR-10 binary format and builds the input pipelines.

The binary files hold fixed-length records: one label byte (0-9) followed by
3,072 image bytes, the 32x32 red plane, then the green plane, then the blue
plane, each in row-major order.

Call sequence, as in the tutorial:

  images, labels = distorted_inputs(data_dir, batch_size)   # training
  images, labels = inputs(eval_data, data_dir, batch_size)  # evaluation

`data_dir` is the directory that holds the `.bin` files
(`<--data_dir>/cifar-10-batches-bin`).

The pipelines use `tf.data` rather than queue runners: records are read from
the files at run time (the dataset never becomes a graph constant), the first
batch is ready as soon as a small shuffle buffer is full, and the distortions
run on whole batches at once, which is several times cheaper than one image at
a time. `read_cifar10` keeps the tutorial's queue-based contract for code that
uses it.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

# Size of the images the model sees, after cropping the 32x32 originals.
IMAGE_SIZE = 24

# Global constants describing the CIFAR-10 data set.
NUM_CLASSES = 10
NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = 50000
NUM_EXAMPLES_PER_EPOCH_FOR_EVAL = 10000

# Layout of one record in the binary files.
ORIGINAL_IMAGE_SIZE = 32
DEPTH = 3
LABEL_BYTES = 1
IMAGE_BYTES = ORIGINAL_IMAGE_SIZE * ORIGINAL_IMAGE_SIZE * DEPTH
RECORD_BYTES = LABEL_BYTES + IMAGE_BYTES

# Directory inside --data_dir that the official tarball extracts to.
BATCHES_DIR = 'cifar-10-batches-bin'
TRAIN_FILES = ['data_batch_%d.bin' % i for i in range(1, 6)]
EVAL_FILES = ['test_batch.bin']
# Class names, one per line, in label order (shipped in the tarball).
META_FILE = 'batches.meta.txt'
CLASS_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck']

# Records held in the training shuffle buffer. Records are interleaved from
# all five files before they enter it, so every batch mixes all files; 10,000
# raw records (30 MB) fill in well under a second.
SHUFFLE_BUFFER_RECORDS = 10000

# Batches preprocessed at once, and batches ready ahead of the model.
MAP_PARALLELISM = 2
PREFETCH_BATCHES = 2

# Images of a batch shown by its image summary.
SUMMARY_IMAGES = 3

# Distortions applied to training images.
MAX_BRIGHTNESS_DELTA = 63
CONTRAST_LOWER = 0.2
CONTRAST_UPPER = 1.8


class CIFAR10Record(object):
  """One decoded record, as returned by `read_cifar10`."""
  height = ORIGINAL_IMAGE_SIZE
  width = ORIGINAL_IMAGE_SIZE
  depth = DEPTH
  key = None         # scalar string tensor "<filename>:<record index>"
  label = None       # int32 tensor [1]
  uint8image = None  # uint8 tensor [height, width, depth]


def _decode_records(records, source):
  """Splits raw records into labels and height-width-channel images.

  Args:
    records: string tensor of shape S holding RECORD_BYTES-long records.
    source: scalar string (or string tensor) naming where the records come
      from, for the error a label outside 0-9 raises.

  Returns:
    labels: int32 tensor of shape S + [1].
    planes: uint8 tensor of shape S + [3, 32, 32], the file's order:
      channel, row, column.
  """
  raw = tf.io.decode_raw(records, tf.uint8)
  # Static shapes where the records' shape is known (-1: a batch of any size).
  outer = [-1 if d is None else d for d in records.shape.as_list()]
  labels = tf.reshape(tf.cast(raw[..., :LABEL_BYTES], tf.int32),
                      outer + [LABEL_BYTES])
  # Such a label means the files are not CIFAR-10 data: say so here, not
  # with an index error in the loss or the confusion matrix.
  valid = tf.debugging.Assert(
      tf.reduce_all(labels < NUM_CLASSES),
      [tf.strings.join(['bad CIFAR-10 data in ', source, ': label']),
       tf.reduce_max(labels), 'is not 0-%d' % (NUM_CLASSES - 1)])
  with tf.control_dependencies([valid]):
    labels = tf.identity(labels)
  return labels, tf.reshape(
      raw[..., LABEL_BYTES:],
      outer + [DEPTH, ORIGINAL_IMAGE_SIZE, ORIGINAL_IMAGE_SIZE])


def read_cifar10(filename_queue):
  """Reads one record from a queue of CIFAR-10 binary files.

  Call repeatedly to read records one after the other, with queue runners
  started. When the queue is closed and its files are read to the end, the
  op raises `tf.errors.OutOfRangeError`.

  Args:
    filename_queue: a queue of strings with the file names to read.

  Returns:
    A `CIFAR10Record` with `height`, `width`, `depth`, `key`, `label` (int32
    [1]) and `uint8image` (uint8 [32, 32, 3]).
  """
  result = CIFAR10Record()
  reader = tf.FixedLengthRecordReader(record_bytes=RECORD_BYTES)
  result.key, value = reader.read(filename_queue)
  result.label, planes = _decode_records(value, result.key)
  result.uint8image = tf.transpose(planes, [1, 2, 0])
  return result


def _check_files(data_dir, names):
  """Returns the full paths of `names` in `data_dir`, checked for size.

  Raises:
    ValueError: naming the directory, the missing file or the bad size.
  """
  if not tf.io.gfile.isdir(data_dir) or not any(
      name.endswith('.bin') for name in tf.io.gfile.listdir(data_dir)):
    # The tarball holds BATCHES_DIR itself, so it is unpacked one level up.
    raise ValueError(
        'no CIFAR-10 data in %s: run cifar10_train.py (it downloads the data '
        'set) or extract cifar-10-binary.tar.gz from '
        'https://www.cs.toronto.edu/~kriz/cifar.html in %s (it unpacks to '
        '%s/)' % (data_dir, os.path.dirname(data_dir.rstrip('/')) or '.',
                  BATCHES_DIR))
  paths = []
  for name in names:
    path = os.path.join(data_dir, name)
    problem = bad_file(path)
    if problem:
      raise ValueError(problem)
    paths.append(path)
  return paths


def bad_file(path):
  """What is wrong with `path` as a file of CIFAR-10 records (missing, a
  directory or of a bad size), or None."""
  if not tf.io.gfile.exists(path):
    return 'missing CIFAR-10 file: %s' % path
  if tf.io.gfile.isdir(path):
    return 'bad CIFAR-10 file %s: a directory' % path
  return bad_size(path, tf.io.gfile.stat(path).length)


def bad_size(path, size):
  """What is wrong with a file of `size` bytes as CIFAR-10 records, or None
  if it holds a whole, non-zero number of them."""
  if size == 0:
    return 'bad CIFAR-10 file %s: empty' % path
  if size % RECORD_BYTES:
    return ('bad CIFAR-10 file %s: %d bytes is not a whole number of %d-byte '
            'records' % (path, size, RECORD_BYTES))
  return None


def num_records(data_dir, eval_data):
  """Number of records in the evaluation (or training) files of `data_dir`."""
  names = EVAL_FILES if eval_data else TRAIN_FILES
  return _count_records(_check_files(data_dir, names))


def _count_records(paths):
  """Number of records in the checked files `paths`."""
  return sum(tf.io.gfile.stat(path).length // RECORD_BYTES for path in paths)


def class_names(data_dir):
  """The class names from `batches.meta.txt` in `data_dir`, else the
  official ones.

  Raises:
    ValueError: naming the file, if it is not text.
  """
  path = os.path.join(data_dir, META_FILE)
  if tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path) as f:
        names = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
      raise ValueError('bad CIFAR-10 class names file %s: not text (%s)'
                       % (path, e.reason))
    if len(names) == NUM_CLASSES:
      return names
  return list(CLASS_NAMES)


def _crop_and_standardize(planes, offset_height, offset_width, flip,
                          brightness, contrast):
  """Crops, flips, brightness, contrast and per-image standardization.

  Image by image, the result is the tutorial's sequence: an IMAGE_SIZE x
  IMAGE_SIZE crop at (offset_height, offset_width), mirrored left to right
  if `flip`, brightness added to every pixel, each channel's deviation from
  its mean scaled by the contrast factor (`tf.image.adjust_contrast`), then
  `tf.image.per_image_standardization`. Done that way, a pass over the
  pixels per step took most of the input pipeline's time; here:

  - The crop, flip and the move of the channels last are one matmul with a
    0/1 matrix per image (each output is one pixel times 1: exact).
  - The rest is an affine map of each channel's pixels, worked out from the
    crop's per-channel sums of x and x^2 (exact for the files' integer
    pixels, finished in float64). It is a little more precise than the
    tutorial's float32 passes: a flat image, whose standard deviation is 0,
    comes out exactly 0.

  (The brightness cancels: it shifts every channel's mean with its pixels,
  so the contrast keeps it and the standardization removes it. It is kept,
  as in the tutorial, in the arithmetic of the per-image terms.)

  Args:
    planes: uint8 [batch, 3, 32, 32], channel-major as in the files.
    offset_height: int32 [batch], top row of each crop.
    offset_width: int32 [batch], left column of each crop.
    flip: bool [batch], whether to mirror the crop left to right.
    brightness: float32 [batch], added to every pixel (0: none).
    contrast: float32 [batch], factor on deviations (1: none).

  Returns:
    float32 [batch, IMAGE_SIZE, IMAGE_SIZE, 3].
  """
  size, width = IMAGE_SIZE, ORIGINAL_IMAGE_SIZE
  window = tf.range(size)
  channel = tf.range(DEPTH)
  # Rows of the crop, ordered (output row, channel): [batch, size, 3 * 32].
  rows = tf.reshape(planes, [-1, DEPTH * width, width])
  row_index = (offset_height[:, None, None] + window[:, None] +
               width * channel)
  rows = tf.gather(rows, tf.reshape(row_index, [-1, size * DEPTH]), axis=1,
                   batch_dims=1)
  rows = tf.reshape(tf.cast(rows, tf.float32), [-1, size, DEPTH * width])
  # Output column j, channel c takes input column cols[j] of channel c.
  cols = tf.where_v2(flip[:, None], offset_width[:, None] + (size - 1) - window,
                     offset_width[:, None] + window)
  source = tf.reshape(width * channel + cols[:, :, None], [-1, size * DEPTH])
  pixels = tf.matmul(rows, tf.one_hot(source, DEPTH * width, axis=1))
  # Per-channel sums: over rows in float32, exact below 2**24 (24 * 255**2
  # at most), then over columns in float64.
  def channel_sums(values):
    by_column = tf.cast(tf.reduce_sum(values, axis=1), tf.float64)
    return tf.reduce_sum(tf.reshape(by_column, [-1, size, DEPTH]), axis=1)
  count = float(size * size)
  mean = channel_sums(pixels) / count                       # [batch, 3]
  variance = channel_sums(tf.square(pixels)) / count - tf.square(mean)
  brightness = tf.cast(brightness, tf.float64)[:, None]
  contrast = tf.cast(contrast, tf.float64)[:, None]
  # After brightness and contrast, pixel x of channel c is
  #   (x - mean[c]) * contrast + bright_mean[c].
  bright_mean = mean + brightness
  image_mean = tf.reduce_mean(bright_mean, axis=1, keepdims=True)
  # Its variance: within the channels, plus that of the channel means.
  image_variance = (tf.square(contrast[:, 0]) * tf.reduce_mean(variance, 1) +
                    tf.reduce_mean(tf.square(bright_mean - image_mean), 1))
  # per_image_standardization's floor on the standard deviation.
  stddev = tf.maximum(tf.sqrt(tf.maximum(image_variance, 0.0)),
                      1.0 / (count * DEPTH) ** 0.5)[:, None]
  # Pixel x of channel c maps to (x - center[c]) * scale + shift[c]: the
  # integers next to the channel means, subtracted exactly, keep a nearly
  # flat image's scaled values small, so that they lose few digits. Each
  # difference in shift is exactly 0 for a flat gray image (its sums and
  # the brightness are exact in float64), which so comes out exactly 0.
  center = tf.round(mean)
  scale = contrast / stddev
  shift = ((bright_mean - image_mean) + (center - mean) * contrast) / stddev
  def per_column(values):  # [batch, 3] -> [batch, 1, size * 3]
    return tf.tile(tf.cast(values, tf.float32), [1, size])[:, None, :]
  images = ((pixels - per_column(center)) *
            tf.cast(scale, tf.float32)[:, :, None] + per_column(shift))
  return tf.reshape(images, [-1, size, size, DEPTH])


def _distort_batch(records, source):
  """Training preprocessing of a batch of raw records.

  Each image gets its own random crop, flip, brightness and contrast, the
  same distributions as `tf.image.random_crop`, `random_flip_left_right`,
  `random_brightness` and `random_contrast` applied image by image, then
  standardization (see `_crop_and_standardize`).

  Args:
    records: string [batch].
    source: where the records come from, for errors.

  Returns:
    images: float32 [batch, IMAGE_SIZE, IMAGE_SIZE, 3], standardized.
    labels: int32 [batch].
  """
  labels, planes = _decode_records(records, source)
  batch = tf.shape(records)[0]
  max_offset = ORIGINAL_IMAGE_SIZE - IMAGE_SIZE + 1
  images = _crop_and_standardize(
      planes,
      tf.random.uniform([batch], 0, max_offset, dtype=tf.int32),
      tf.random.uniform([batch], 0, max_offset, dtype=tf.int32),
      tf.random.uniform([batch]) < 0.5,
      tf.random.uniform([batch], -MAX_BRIGHTNESS_DELTA, MAX_BRIGHTNESS_DELTA),
      tf.random.uniform([batch], CONTRAST_LOWER, CONTRAST_UPPER))
  return images, labels[:, 0]


def _central_batch(records, source):
  """Evaluation preprocessing: central crop and standardization.

  Args:
    records: string [batch].
    source: where the records come from, for errors.

  Returns:
    images: float32 [batch, IMAGE_SIZE, IMAGE_SIZE, 3]; labels: int32 [batch].
  """
  labels, planes = _decode_records(records, source)
  return preprocess_for_eval(tf.transpose(planes, [0, 2, 3, 1])), labels[:, 0]


def preprocess_for_eval(images):
  """Central IMAGE_SIZE crop and per-image standardization.

  Args:
    images: uint8 or float [batch, 32, 32, 3], pixel values 0-255.

  Returns:
    float32 [batch, IMAGE_SIZE, IMAGE_SIZE, 3].
  """
  begin = (ORIGINAL_IMAGE_SIZE - IMAGE_SIZE) // 2
  images = images[:, begin:begin + IMAGE_SIZE, begin:begin + IMAGE_SIZE, :]
  return tf.image.per_image_standardization(tf.cast(images, tf.float32))


def _records(paths, shuffle):
  """Dataset of raw records; training order is shuffled across all files."""
  if not shuffle:
    return tf.data.FixedLengthRecordDataset(paths, RECORD_BYTES)
  files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths))
  records = files.repeat().interleave(
      tf.autograph.experimental.do_not_convert(
          lambda path: tf.data.FixedLengthRecordDataset(path, RECORD_BYTES)),
      cycle_length=len(paths), block_length=1)
  return records.shuffle(SHUFFLE_BUFFER_RECORDS)


def image_summary(images):
  """Summary op of the first images of a batch, tagged 'images/image/<i>'.

  Args:
    images: float32 [batch, height, width, 3].

  Returns:
    Scalar string tensor: a serialized Summary.
  """
  return tf.raw_ops.ImageSummary(tag='images', tensor=images,
                                 max_images=SUMMARY_IMAGES)


def _batch_function(preprocess, data_dir, names):
  """`preprocess` as a map function of the records of files `names` of
  `data_dir`."""
  source = 'the %s files of %s' % (
      'test' if names == EVAL_FILES else 'training', data_dir)
  # Plain TensorFlow: skipping autograph's conversion saves a third of a
  # second of start-up.
  return tf.autograph.experimental.do_not_convert(
      lambda records: preprocess(records, source))


# The pipelines' error for a label outside 0-9 (see `_decode_records`).
_BAD_LABEL = re.compile(r'^bad CIFAR-10 data in the (test|training) files of '
                        r'(.+): label (\d+) is not 0-9$')


def locate_bad_label(message):
  """`message`, if it is a pipeline's error for a label outside 0-9, made
  to name the file and record that hold the label; else `message`.

  The pipelines mix the files' records, so the error itself knows only the
  directory; this search runs once it is raised, not on every start.
  """
  match = _BAD_LABEL.match(message)
  if not match:
    return message
  kind, data_dir, label = match.group(1), match.group(2), int(match.group(3))
  for name in EVAL_FILES if kind == 'test' else TRAIN_FILES:
    path = os.path.join(data_dir, name)
    try:
      with tf.io.gfile.GFile(path, 'rb') as f:
        labels = np.frombuffer(f.read(), np.uint8)[::RECORD_BYTES]
    except tf.errors.OpError:
      continue
    records = np.flatnonzero(labels == label)
    if records.size:
      return ('bad CIFAR-10 data in %s: record %d (counting from 0) has '
              'label %d, not 0-%d' % (path, records[0], label,
                                      NUM_CLASSES - 1))
  return message


def _get_next(dataset, prefetch=PREFETCH_BATCHES):
  """Batches of (images, labels) from `dataset`, `prefetch` of them ready."""
  options = tf.data.Options()
  # tf.data's autotuner can hold up closing the session by seconds, and a
  # fixed small parallelism already feeds training several times over.
  options.autotune.enabled = False
  dataset = dataset.prefetch(prefetch).with_options(options)
  return tf.data.make_one_shot_iterator(dataset).get_next()


def distorted_inputs(data_dir, batch_size, queue_batches=False):
  """Distorted, shuffled training batches, repeating without end.

  Adds the summary of the images (`image_summary`) to the SUMMARIES
  collection.

  Args:
    data_dir: directory with the CIFAR-10 `.bin` files.
    batch_size: images per batch.
    queue_batches: for steps that may be cancelled (runs with a timeout):
      the batches then come through a queue (see `_queued`).

  Returns:
    images: float32 [batch_size, IMAGE_SIZE, IMAGE_SIZE, 3].
    labels: int32 [batch_size].

  Raises:
    ValueError: if the data is missing or has the wrong size.
  """
  paths = _check_files(data_dir, TRAIN_FILES)
  dataset = _records(paths, shuffle=True).batch(batch_size,
                                                drop_remainder=True)
  dataset = dataset.map(_batch_function(_distort_batch, data_dir,
                                        TRAIN_FILES),
                        num_parallel_calls=MAP_PARALLELISM)
  images, labels = _get_next(dataset)
  if queue_batches:
    images, labels = _queued(images, labels)
  tf.add_to_collection(tf.GraphKeys.SUMMARIES, image_summary(images))
  return images, labels


def _queued(images, labels):
  """The batches through a FIFOQueue that a queue runner fills.

  A step cancelled while it reads from a tf.data iterator (its run timed
  out) cancels the iterator for good: every later read fails, with
  OutOfRangeError, which a MonitoredSession takes for the end of the data
  (training stops as if done), or with CancelledError. A cancelled dequeue
  loses nothing, and the queue runner (MonitoredSession starts it) reads the
  iterator in a thread of its own, whose runs have no timeout.
  """
  queue = tf.queue.FIFOQueue(PREFETCH_BATCHES, [images.dtype, labels.dtype],
                             shapes=[images.shape, labels.shape],
                             name='batch_queue')
  tf.train.add_queue_runner(
      tf.train.QueueRunner(queue, [queue.enqueue([images, labels])]))
  return queue.dequeue()


def inputs(eval_data, data_dir, batch_size, num_examples=None, repeat=False):
  """Evaluation batches: every image once, in file order.

  The last batch is smaller when `batch_size` does not divide the number of
  images, so the images' count is exact. A new session starts the data from
  the beginning. No summary: cifar10_eval.py summarizes the first batch.

  Args:
    eval_data: True for the test set, False for the training set.
    data_dir: directory with the CIFAR-10 `.bin` files.
    batch_size: images per batch.
    num_examples: read only the first `num_examples` images (all if None).
    repeat: after the last batch, serve the same batches again, without end,
      from memory (6,912 bytes an image): later passes read no file and
      preprocess nothing, and the first is preprocessed ahead of the
      model, all of it.

  Returns:
    images: float32 [<= batch_size, IMAGE_SIZE, IMAGE_SIZE, 3].
    labels: int32 [<= batch_size].

  Raises:
    ValueError: if the data is missing or has the wrong size.
  """
  names = EVAL_FILES if eval_data else TRAIN_FILES
  paths = _check_files(data_dir, names)
  dataset = _records(paths, shuffle=False)
  if num_examples is not None:
    dataset = dataset.take(num_examples)
  dataset = dataset.batch(batch_size).map(
      _batch_function(_central_batch, data_dir, names),
      num_parallel_calls=MAP_PARALLELISM)
  if not repeat:
    return _get_next(dataset)
  # The cache holds the whole pass anyway, so let the preprocessing run ahead
  # through all of it, in one burst at the start, while the first batch is
  # set up and run. Taking turns with every batch of the model instead cost
  # the model more time than the preprocessing's own.
  images = _count_records(paths)
  if num_examples is not None:
    images = min(images, num_examples)
  return _get_next(dataset.cache().repeat(),
                   prefetch=max(1, -(-images // batch_size)))
