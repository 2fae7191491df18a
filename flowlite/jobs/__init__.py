"""What the command line runs (``python -m flowlite JOB``): the 2-D jobs (``targets``, ``train-base``, ``finetune``,
``bench``) and the image fine-tuning job with its evaluation and sampling (``sd3``, ``sd3-sample``). Jobs may import
every room; no other room imports a job."""
