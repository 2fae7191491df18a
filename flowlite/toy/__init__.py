"""The 2-D world (theory §9): Gaussian mixtures whose flow-matching velocity, KL tilt, optimal fine-tuned velocity and
critic are known in closed form, toy rewards, ``ToyFlow`` (frozen base + zero-initialised residual), the benchmark
problems, VGG-Flow's exact targets, metrics with their noise floors, and plotting. Imports no model package."""

from flowlite.toy.exact_critic import exact_critic
from flowlite.toy.flow import ExactMixtureVelocity, ToyFlow, default_residual
from flowlite.toy.gmm import GaussianMixture
from flowlite.toy.metrics import (energy_distance, histogram_kl, mode_mass_error, mode_weights, noise_floor,
                                  reward_stats, score, sliced_w2)
from flowlite.toy.nets import Critic, MLPVelocity
from flowlite.toy.problems import Problem, list_problems, load_problem
from flowlite.toy.rewards import LinearReward, MixtureLogDensityReward, QuadraticReward, ToyReward, reward_from_dict

__all__ = ["exact_critic", "ExactMixtureVelocity", "ToyFlow", "default_residual", "GaussianMixture",
           "energy_distance", "histogram_kl", "mode_mass_error", "mode_weights", "noise_floor", "reward_stats", "score",
           "sliced_w2", "Critic", "MLPVelocity", "Problem", "list_problems", "load_problem", "LinearReward",
           "MixtureLogDensityReward", "QuadraticReward", "ToyReward", "reward_from_dict"]
