"""The articles' ``lepton.recommender``: Lepton's recommender under the articles' name.

An alias kept so the code printed in the articles about Lepton runs as written (with
``lepton`` for ``leptonai``); ``docs/articles.md`` shows each snippet beside the modern
call. ``Recommender`` *is* :class:`lepton.recommend.Recommender` (biased matrix
factorization trained with torch): ``fit(train_data)`` takes a table of user, item and
rating (a pandas DataFrame, a dict of columns, or ``(user, item, rating)`` rows, such as
a list of tuples or a 2-D array), and ``predict(test_data)`` returns the predicted rating
of each ``(user, item)`` pair of a table of the same shapes (a rating column, if present,
is ignored). New code uses :mod:`lepton.recommend`::

    import lepton as lp

    ratings = lp.data.load("movielens", split="all")
    train, test = ratings.split(0.2, seed=0)
    rec = lp.recommend.Recommender(factors=64).fit(train)
    rec.score(test)  # RMSE, MAE, precision/recall/NDCG@k, coverage
"""

from __future__ import annotations

from lepton.recommend import Recommender

__all__ = ["Recommender"]
