"""Word lists for `dataset.py` (Chilean legal / HR flavour, as in the seed's application)."""

FIRST_NAMES = (
    "Hector", "Camila", "Javiera", "Matias", "Sofia", "Benjamin", "Valentina", "Diego",
    "Francisca", "Tomas", "Catalina", "Vicente", "Fernanda", "Joaquin", "Constanza", "Ignacio",
    "María José", "Agustín", "Begoña", "Ñuñoa",
)  # fmt: skip
LAST_NAMES = (
    "Neira", "Gonzalez", "Munoz", "Rojas", "Diaz", "Perez", "Soto", "Contreras", "Silva",
    "Martinez", "Sepulveda", "Morales", "Rodriguez", "Lopez", "Fuentes", "Hernandez",
    "Araya", "Castillo", "Núñez", "Peña",
)  # fmt: skip
ROLE_NAMES = ("admin", "legal", "hr", "manager", "employee")
PERMISSION_RESOURCES = (
    "users",
    "legal_contracts",
    "templates",
    "hr_employees",
    "documents",
    "audit",
)
POSITIONS = ("Abogado", "Analista RRHH", "Contador", "Jefe de Operaciones", "Desarrollador")
SIGNATORY_TYPES = (
    ("legal_rep", "Representante legal"),
    ("witness", "Testigo"),
    ("employee", "Trabajador"),
    ("notary", "Notario"),
)
THIRD_PARTY_TYPES = (
    ("supplier", "Proveedor"),
    ("client", "Cliente"),
    ("contractor", "Contratista"),
    ("landlord", "Arrendador"),
    ("partner", "Socio"),
)
TEMPLATE_NAMES = (
    "Contrato de trabajo",
    "Anexo de contrato",
    "Certificado de antigüedad",
    "Finiquito",
    "Acuerdo de confidencialidad",
    "Contrato de arriendo",
    "Poder simple",
    "Carta de amonestación",
)
ACTIONS = ("create", "update", "update", "update", "destroy", "sign", "download")
CLAUSES = (
    (
        "Objeto",
        "El proveedor se obliga a prestar los servicios descritos en el Anexo A, conforme a "
        "los niveles de servicio acordados y a las instrucciones razonables del cliente, "
        "durante toda la vigencia del presente contrato.",
    ),
    (
        "Precio y forma de pago",
        "El precio se pagará en pesos chilenos dentro de los treinta días siguientes a la "
        "recepción conforme de la factura, previa aprobación del administrador del contrato "
        "designado por el cliente.",
    ),
    (
        "Confidencialidad",
        "Las partes mantendrán en estricta reserva toda información a la que tengan acceso "
        "con motivo de este contrato, obligación que subsistirá por cinco años después de "
        "su término, cualquiera sea la causa.",
    ),
    (
        "Término anticipado",
        "Cualquiera de las partes podrá poner término al contrato mediante aviso escrito "
        "enviado con treinta días de anticipación, sin expresión de causa y sin derecho a "
        "indemnización alguna.",
    ),
    (
        "Protección de datos",
        "El tratamiento de datos personales se ajustará a la Ley 19.628 y a las políticas "
        "internas del cliente; el proveedor adoptará medidas de seguridad técnicas y "
        "organizativas adecuadas.",
    ),
    (
        "Domicilio y jurisdicción",
        "Para todos los efectos legales las partes fijan domicilio en la ciudad de Santiago "
        "y se someten a la competencia de sus tribunales ordinarios de justicia.",
    ),
)
