import pandas as pd

from lepton.recommender import Recommender

# A table of user, item, rating
train_data = pd.DataFrame(
    [
        (1, 101, 5.0), (1, 102, 3.0), (1, 103, 1.0),
        (2, 101, 4.0), (2, 103, 2.0), (2, 104, 5.0),
        (3, 102, 4.0), (3, 103, 1.0), (3, 104, 4.0),
        (4, 101, 5.0), (4, 102, 2.0), (4, 104, 5.0),
    ],
    columns=["user", "item", "rating"],
)  # fmt: skip
test_data = pd.DataFrame(
    [(3, 101, 5.0), (1, 104, 4.0), (4, 103, 1.0)],
    columns=["user", "item", "rating"],
)

# Train the recommender and predict the test ratings
model = Recommender()
model.fit(train_data)
predictions = model.predict(test_data)
print(predictions)
