import pandas as pd

from lepton import LinearRegression

data = pd.DataFrame(
    {
        "size": [50, 80, 120, 65, 150, 95],
        "rooms": [1, 2, 3, 2, 4, 3],
        "price": [135, 205, 295, 175, 365, 245],
    }
)
X = data[["size", "rooms"]]
y = data["price"]

model = LinearRegression()
model.fit(X, y)
print(model.predict(pd.DataFrame({"size": [100], "rooms": [2]})))
