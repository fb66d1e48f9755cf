from sklearn.datasets import load_breast_cancer

import lepton as lp
from lepton.privacy import differential_privacy

train_data = load_breast_cancer(as_frame=True).frame  # a pandas DataFrame

# Lepton charges every release to the table's privacy budget, and reads the columns'
# bounds from this declaration, never from the data
lp.privacy.set_budget(
    train_data, epsilon=1.0, columns={"mean radius": (5, 30, 10), "target": [0, 1]}
)

# Apply differential privacy to the training data
private_data = differential_privacy(train_data, epsilon=0.1)
print(private_data.data)  # synthetic rows of the declared columns
print(f"epsilon spent {private_data.epsilon}, left {lp.privacy.budget(train_data).remaining}")
