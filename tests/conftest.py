"""Shared fixtures: small data sets in the CIFAR-10 format, fresh graphs."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cifar_testdata  # pylint: disable=g-import-not-at-top
import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

import cifar10  # pylint: disable=g-import-not-at-top,unused-import

# The library reads the shared flags (--batch_size, --use_fp16, ...) at graph
# construction; tests parse an empty command line once, then set values.
if not tf.app.flags.FLAGS.is_parsed():
  tf.app.flags.FLAGS(['pytest'])


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A --data_dir with 5 x 64 learnable training images and 300 test images.

  Returns:
    (data_dir, batches_dir, written) with written = {file: (labels, images)}.
  """
  root = str(tmp_path_factory.mktemp('cifar10_data'))
  batches = os.path.join(root, cifar_testdata.BATCHES_DIR)
  written = cifar_testdata.write_dataset(batches, train_per_file=64,
                                         test_records=300)
  return root, batches, written


@pytest.fixture
def graph():
  """A fresh default graph for the test."""
  with tf.Graph().as_default() as g:
    yield g


@pytest.fixture
def flags():
  """The shared flags, restored to their values after the test."""
  saved = tf.app.flags.FLAGS.flag_values_dict()
  yield tf.app.flags.FLAGS
  for name, value in saved.items():
    setattr(tf.app.flags.FLAGS, name, value)
