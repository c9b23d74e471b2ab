"""The platform's catalog in Redis (hospitals, departments, doctors, sessions, patients), doctors'
rotas, the HIS schedule import, and a hospital's view of its patients."""
