-- Run once by the postgres image on an empty volume: the databases besides the main one.
CREATE DATABASE mlflow;
CREATE DATABASE feast;
