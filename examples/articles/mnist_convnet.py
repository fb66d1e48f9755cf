from lepton.tf_dataset import load_mnist_data
from lepton.tf_model import ConvNet
from lepton.tf_train import evaluate, train

# Load the MNIST dataset
train_dataset = load_mnist_data()
test_dataset = load_mnist_data(test=True)

# Define the model
model = ConvNet(num_classes=10, num_filters=[32, 64, 128], kernel_size=[3, 3], dropout=0.5)

# Train the model
train(model, train_dataset, test_dataset, num_epochs=10, batch_size=32)

# Evaluate the model
results = evaluate(model, test_dataset)
print(results)
