"""Trains the CIFAR-10 model on several GPUs with synchronous updates.

  python cifar10_multi_gpu_train.py --num_gpus=2

One model replica ("tower") per GPU, named `tower_N`, all sharing one set of
variables on the CPU. One input pipeline reads --batch_size x --num_gpus
images per step and gives each tower --batch_size of them; the towers'
gradients are averaged and applied once, so one step is exactly a step of
the single-GPU model on the global batch. The learning-rate schedule counts
the images of the global batch, so it decays after the same number of
epochs whatever the number of GPUs.

Everything else (resume, checkpoints, summaries, signals, NaN handling,
log lines) is cifar10_train.py's code; checkpoints of both trainers are
interchangeable. On a machine without GPUs the towers run on the CPU. On a
cluster (the flags of cifar10_train.py, or TF_CONFIG) each worker runs
--num_gpus towers on its own GPUs.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import tensorflow.compat.v1 as tf

import cifar10_cli
import cifar10_cluster
import cifar10_train

FLAGS = tf.app.flags.FLAGS

tf.app.flags.DEFINE_integer('num_gpus', 1, """How many GPUs to use.""")
cifar10_cli.positive('num_gpus')


def main(argv=None):  # pylint: disable=unused-argument
  task = cifar10_train.start_task()
  if task and task.job_name == 'ps':
    return cifar10_cluster.serve(task)
  devices = cifar10_train.tower_devices(FLAGS.num_gpus)
  if not devices[0].startswith('/gpu'):
    cifar10_cli.log('no GPU found: running the %d tower(s) on the CPU'
                    % FLAGS.num_gpus)
  return cifar10_train.train(devices, task)


if __name__ == '__main__':
  cifar10_cli.run(main)
