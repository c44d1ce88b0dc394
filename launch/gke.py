"""Train on GKE: a JobSet for one TPU slice or a GPU node pool, applied with kubectl.

  # TPU slice (one pod per TPU host; GKE gives jax its peers through the TPU environment):
  python launch/gke.py --name=lmjax-1b --image=IMAGE --accelerator=v5p-64 \
      --config=experiments/decoder_lm.py:1b --workdir=gs://BUCKET/run1 [--config.x=y ...] [--dry-run]
  # GPU node pool (one pod per node, one process per pod over its G GPUs):
  python launch/gke.py --name=lmjax-1b --image=IMAGE --gpu_type=nvidia-h100-80gb --num_nodes=2 \
      --gpus_per_node=8 --config=experiments/decoder_lm.py:1b --workdir=gs://BUCKET/run1

IMAGE is a container image with lmjax installed (`pip install -e ".[gcs]"`, the gcs extra for
gs:// workdirs, plus jax[tpu] or jax[cuda12]) and the repository as its working directory;
--install makes each pod run that pip install (".[gcs]") before training, for an image that has
the repository but not the extra. The workdir (gs://... on multi-host jobs) is passed to
lmjax.main unchanged. The cluster needs the JobSet
controller (kubectl apply --server-side -f
https://github.com/kubernetes-sigs/jobset/releases/download/v0.8.0/manifests.yaml).
On GPUs the processes meet at pod 0 through the JobSet's headless service:
--coordinator_address=NAME-workers-0-0.NAME:PORT --num_processes=NODES
--process_id=$JOB_COMPLETION_INDEX.

Before the manifest is printed or applied, the experiment is loaded as lmjax.main will load
it (file, variant, --config.* overrides) and its mesh and batch are fitted to the devices (TPU:
the slice's chips; GPU: --num_nodes x --gpus_per_node); a bad one is one line `error: ...`
naming the flag or config field, exit status 2. The plan goes to stderr as one `plan: ...` line.
--dry-run prints the manifest (YAML) instead of piping it to `kubectl apply -f -`.
"""

import os
import shlex
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=wrong-import-position

REPLICATED_JOB = 'workers'


def build_parser() -> common.Parser:
  p = common.Parser(prog='launch/gke.py',
                    description='Train lmjax on GKE with a JobSet (extra --config.* overrides '
                                'are passed to lmjax.main).')
  p.add_argument('--name', required=True, help='JobSet name (a DNS label)')
  p.add_argument('--image', required=True, help='container image with lmjax installed')
  p.add_argument('--namespace', default='default')
  p.add_argument('--accelerator', default=None, help='TPU slice type, e.g. v5p-64')
  p.add_argument('--gpu_type', default=None,
                 help='GPU node label cloud.google.com/gke-accelerator, e.g. nvidia-h100-80gb')
  p.add_argument('--num_nodes', type=common.positive_int, default=1)
  p.add_argument('--gpus_per_node', type=common.positive_int, default=8)
  p.add_argument('--port', type=common.positive_int, default=1234,
                 help='jax.distributed coordinator port (GPU)')
  p.add_argument('--max_restarts', type=int, default=0, help='JobSet failurePolicy.maxRestarts')
  p.add_argument('--install', action='store_true',
                 help='each pod runs pip install -e ".[gcs]" (gs:// workdirs) before training')
  common.add_lmjax_flags(p, python='python')
  return p


def manifest(args, overrides: list[str]) -> dict:
  if not args.name.replace('-', '').isalnum() or not args.name[0].isalpha():
    common.fail(f'--name={args.name}: must be a DNS label (letters, digits, -)')
  if bool(args.accelerator) == bool(args.gpu_type):
    common.fail('give exactly one of --accelerator (TPU slice) or --gpu_type (GPU node pool)')
  if args.accelerator:
    slc = common.tpu_slice(args.accelerator)
    num_devices, devices_from = slc.chips, f'--accelerator={args.accelerator}: {slc.chips} chips'
  else:
    num_devices = args.num_nodes * args.gpus_per_node
    devices_from = (f'--num_nodes={args.num_nodes} x --gpus_per_node={args.gpus_per_node}: '
                    f'{num_devices} GPUs')
  common.say_plan(common.plan(args.config, overrides, num_devices, devices_from), args.config)
  train = common.lmjax_command(args.python, args.config, args.workdir, overrides)
  install = (f'{shlex.quote(args.python)} -m pip install -q -e ".[gcs]" && '
             if args.install else '')
  container = {'name': 'lmjax', 'image': args.image, 'imagePullPolicy': 'Always'}
  annotations = {}
  if args.accelerator:
    pods = slc.hosts
    node_selector = {'cloud.google.com/gke-tpu-accelerator': slc.gke_accelerator,
                     'cloud.google.com/gke-tpu-topology': slc.topology}
    command = ['bash', '-c', f'{install}exec {shlex.join(train)}'] if install else train
    container.update(command=command, ports=[{'containerPort': 8471}, {'containerPort': 8080}],
                     resources={'limits': {'google.com/tpu': slc.chips_per_host}})
    annotations['alpha.jobset.sigs.k8s.io/exclusive-topology'] = 'cloud.google.com/gke-nodepool'
  else:
    pods = args.num_nodes
    node_selector = {'cloud.google.com/gke-accelerator': args.gpu_type}
    coordinator = f'{args.name}-{REPLICATED_JOB}-0-0.{args.name}:{args.port}'
    script = common.shell_join(train, common.dist_flags(
        shlex.quote(coordinator), str(pods), '"$JOB_COMPLETION_INDEX"'))
    container.update(command=['bash', '-c', f'{install}exec {script}'],
                     ports=[{'containerPort': args.port}],
                     resources={'limits': {'nvidia.com/gpu': args.gpus_per_node}})
  pod_spec = {'restartPolicy': 'Never', 'nodeSelector': node_selector,
              'containers': [container]}
  job = {'parallelism': pods, 'completions': pods, 'completionMode': 'Indexed',
         'backoffLimit': 0, 'template': {'spec': pod_spec}}
  meta = {'name': args.name, 'namespace': args.namespace}
  if annotations:
    meta['annotations'] = annotations
  return {
      'apiVersion': 'jobset.x-k8s.io/v1alpha2', 'kind': 'JobSet', 'metadata': meta,
      'spec': {'failurePolicy': {'maxRestarts': args.max_restarts},
               'network': {'enableDNSHostnames': True},
               'replicatedJobs': [{'name': REPLICATED_JOB, 'replicas': 1,
                                   'template': {'spec': job}}]}}


def main(argv=None) -> None:
  args, overrides = common.parse(build_parser(), argv)
  text = yaml.safe_dump(manifest(args, overrides), sort_keys=False, width=1000)
  common.pipe(['kubectl', 'apply', '-f', '-'], text, args.dry_run)


if __name__ == '__main__':
  main()
