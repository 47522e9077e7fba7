"""Episode returns and lengths of collected experience, for progress reports."""
import collections
from typing import List, Tuple

import numpy as np
from tf_agents.trajectories import time_step as ts

__all__ = ["RecentEpisodes", "BatchedEpisodeTracker"]


class RecentEpisodes:
    """The last `size` finished episodes' (return, length)."""

    def __init__(self, size: int = 20):
        self._episodes = collections.deque(maxlen=size)

    def add(self, episode_return: float, length: int) -> None:
        self._episodes.append((float(episode_return), int(length)))

    def episodes(self) -> List[Tuple[float, int]]:
        """The (return, length) pairs held, oldest first."""
        return list(self._episodes)

    def mean(self) -> Tuple[float, float]:
        """(mean return, mean length); (0, 0) before any episode has finished."""
        if not self._episodes:
            return 0.0, 0.0
        returns, lengths = zip(*self._episodes)
        return float(np.mean(returns)), float(np.mean(lengths))


class BatchedEpisodeTracker:
    """Undiscounted returns and lengths of the episodes in [B, T] trajectory batches.

    What TF-Agents' `AverageReturnMetric` / `AverageEpisodeLengthMetric` observe step
    by step, computed once per batch: an episode's return is the sum of its rewards,
    its length counts its non-boundary steps, and episodes that run across batches
    are carried per environment.
    """

    def __init__(self, num_envs: int, size: int = 20):
        self.recent = RecentEpisodes(size)
        self._return = np.zeros(num_envs, np.float64)
        self._length = np.zeros(num_envs, np.int64)

    def update(self, step_type: np.ndarray, next_step_type: np.ndarray, reward: np.ndarray) -> None:
        """Consumes one [B, T] batch (NumPy arrays of the trajectory's fields)."""
        first = step_type == ts.StepType.FIRST
        boundary = step_type == ts.StepType.LAST  # LAST → FIRST: the reset, not an env step
        ends = (next_step_type == ts.StepType.LAST) & ~boundary
        rewards = np.where(boundary, 0.0, reward)
        for b in range(step_type.shape[0]):
            # Pieces start at each FIRST step; a piece holds at most one episode end.
            for piece in np.split(np.arange(step_type.shape[1]), np.flatnonzero(first[b])):
                if not piece.size:
                    continue
                if first[b, piece[0]]:
                    self._return[b], self._length[b] = 0.0, 0
                self._return[b] += rewards[b, piece].sum()
                self._length[b] += int((~boundary[b, piece]).sum())
                if ends[b, piece].any():
                    self.recent.add(self._return[b], self._length[b])
